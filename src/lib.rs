//! The platform's test kit: start real uWSGI instances with the built plugins, wait until
//! they are ready, read their logs, talk HTTP to them, and always stop them by PID.
//!
//! Every later plugin's integration tests use it; see `tests/`.

pub mod acme_ca;
pub mod alarm_kit;
pub mod harness;
pub mod host;
pub mod http;
pub mod netns;
pub mod node;
pub mod oci_kit;
pub mod platform;
pub mod ports;
pub mod ssh;

pub use harness::{Instance, InstanceBuilder};
