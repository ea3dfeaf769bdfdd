//! `unbit-node-sync`: the node's link to the control API.
//!
//! It long-polls `GET /api/node/v1/containers?since=<revision>` (answers arrive within a
//! second of a change) and keeps the node's spec folder (`<uid>.json` per container, read by
//! the `unbit_containers` imperial monitor) equal to the answer, and `domains.json` equal to
//! `GET /api/node/v1/domains` (read by the subscription validator). The folder is the node's
//! last good state: when the API is unreachable nothing changes, and a node restarted meanwhile
//! runs what the folder says.
//!
//! * [`folder`]: how an answer is applied (atomic writes, the removal safety rules);
//! * [`client`]: the HTTP side (mTLS in production, a node token on loopback in development);
//! * [`settings`]: `--settings FILE`, the API connection in a file the operator writes;
//! * [`access`]: the customer sshd's keys and users, derived from the spec folder.

pub mod access;
pub mod client;
pub mod folder;
pub mod settings;
