//! The uwsgi.it control API as a library: the binary (`main.rs`) only parses the command line.
//!
//! Layout: `routes/` holds one module per customer resource plus the node endpoints, `store/`
//! owns the database (SQLite or PostgreSQL through one SQL dialect), `auth`/`ldap` decide who
//! is calling, `specs` turns rows into the typed `container_spec::ContainerSpec` a node runs.

pub mod admin;
pub mod auth;
pub mod body;
pub mod crypto;
pub mod dns_proof;
pub mod error;
pub mod graph;
pub mod ldap;
pub mod node_auth;
pub mod openapi;
pub mod retention;
pub mod revisions;
pub mod routes;
pub mod server;
pub mod specs;
pub mod state;
pub mod store;
pub mod validate;
