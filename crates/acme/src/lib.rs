//! `unbit-acme`: automatic certificates for the domains a node serves with `tls = auto`.
//!
//! Run by the node Emperor (`attach-daemon2` in `emperor.ini`). It reads the names from the
//! node's `domains.json` (entries with `"tls": "auto"`, written by `unbit-node-sync` from the
//! control API), keeps an ACME account and the certificates under a root-only store, orders a
//! certificate for each name with an HTTP-01 challenge that the router's front door routes to
//! this daemon's socket, renews with a third of the lifetime left (or inside the CA's ARI
//! window), backs off on failures, and writes the index the router's SNI plugin serves from.
//! Design and the interfaces with the router: docs/architecture.md, "Automatic certificates".
//!
//! * [`daemon`]: the loop (what is due, one order at a time, logs to the operator and the
//!   domain owner's containers);
//! * [`issuer`]: ACME through `instant-acme` (account, order, challenge, ARI);
//! * [`responder`]: the HTTP-01 answers, on a uwsgi-protocol unix socket;
//! * [`store`]: files, modes, the atomic `current` switch, `index.json`;
//! * [`schedule`]: renewal times and backoff; [`cert`]: keys, CSRs, certificate dates;
//! * [`domains`], [`settings`]: the inputs.

pub mod cert;
pub mod daemon;
pub mod domains;
pub mod issuer;
pub mod responder;
pub mod schedule;
pub mod settings;
pub mod store;
