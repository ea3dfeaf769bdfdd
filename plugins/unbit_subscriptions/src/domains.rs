//! Who owns which domain on this node: the domains file and its table live in the
//! `domain-table` crate, shared with the router's front door (`plugins/unbit_router`).
//!
//! The table holds names as the control API stores them (lowercase IDNA ASCII) and is looked
//! up with keys in that same form: the validator turns every announced key into it first
//! ([`domain_names::normalize_key`]: case, Unicode, a trailing dot, a port), so what a customer
//! writes in `domain =` and what the API accepted meet here.

pub use domain_table::{is_domain_name, Domain, DomainTable, Loaded};
