//! The router's certificate index: which certificate the node's HTTPS router serves for a name.
//!
//! The router's http processes parse whatever the Internet sends, so they run as an
//! unprivileged user (`unbit-router`) and cannot read customer keys (0600 files in the homes).
//! The subscription validator, root, reads the files an announce names (after checking they
//! are the sender's own regular files, reached without a symlink), checks them, and writes what
//! the router needs here, in a directory only root writes to and only the router's group may
//! enter. The router reads an entry on the first handshake for its name, never at start, so a
//! node with 100 000 names starts as fast as one with none.
//!
//! ```text
//! <dir>/                 root:<router group> 0710   (the group may open names, not list them)
//!   example.org          root:<router group> 0440   one entry per name (DER chain, key, client CA)
//!   .example.org                                     a wildcard: serves names one label below
//!   @client-ca           root:<router group> 0440   the names whose requests need a client certificate
//!   @tmp-*                                           being written (renamed into place when complete)
//! ```
//!
//! An entry is replaced by `rename`, so a reader sees the old file or the new one, never half
//! of one; the router notices a new one by its inode. `@` never starts a domain name, so the
//! index's own files cannot collide with an entry.
//!
//! * [`bundle`]: a certificate, its chain, its key and a client CA, checked as a customer would
//!   want to hear about mistakes; the entry file's format; the router's `SSL_CTX` for it;
//! * [`names`]: which entries may serve a name (the exact one, then the wildcard one label up);
//! * [`dir`]: the writer's side (atomic files, modes, the client-CA list);
//! * `testing` (feature `testing`, tests and benchmarks only): certificates for tests.

pub mod bundle;
pub mod dir;
pub mod names;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use bundle::{Bundle, ClientCa, Entry};
pub use dir::IndexDir;

/// The file listing the names whose entry has a client CA (and the names that shadow such a
/// wildcard), read by the router's front door on every request's Host.
pub const CLIENT_CA_LIST: &str = "@client-ca";
/// Prefix of files being written.
pub const TMP_PREFIX: &str = "@tmp-";
/// An entry larger than this is not read (a chain of a few certificates and a key is ~5 KB).
pub const MAX_ENTRY: u64 = 1 << 20;

/// Entries the other members of a Legion sealed to this node (`plugins/unbit_cluster`'s
/// receiver writes them, with the same modes): the `ssl-cluster-domain`s whose containers run on
/// other nodes. A directory beside the validator's index, consulted after it: this node's own
/// entry for a name wins.
pub const CLUSTER_DIR: &str = "cluster-sni";

/// The cluster's entries beside the index `index` ([`CLUSTER_DIR`]).
pub fn cluster_dir(index: &std::path::Path) -> std::path::PathBuf {
    index.parent().unwrap_or(std::path::Path::new("/")).join(CLUSTER_DIR)
}

/// The index beside the router's private subscription socket, unless configured otherwise
/// (`unbit-subscriptions-sni-dir`): `<dir of the socket>/sni`.
pub fn default_dir(router_socket: &std::path::Path) -> std::path::PathBuf {
    router_socket.parent().unwrap_or(std::path::Path::new("/")).join("sni")
}
