//! The typed container spec: what the control API hands a node and what the node's
//! `unbit_containers` plugin turns into a running jail.
//!
//! Every string a customer can type passes through [`ContainerSpec::validate`] before anything
//! privileged sees it. The node never templates these values into a uWSGI config: it reads the
//! spec as data (see `docs` in the README, "Rules learned from the original").

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod grammar;
mod spec;

pub use grammar::{is_path_component, is_relative_path, FieldError, ValidationError};
pub use spec::*;
