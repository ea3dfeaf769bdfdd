//! Platform alarms: what a container (or the node) tells the node's alarm relay, and how the
//! relay (`unbit-alarmd`, see `docs/alarms.md`) decides what to send where.
//!
//! * [`protocol`]: the relay socket's lines (JSON, one per line), and a non-blocking sender;
//! * [`dedup`]: at most one alarm per (container, kind) per `alarm_freq`;
//! * [`retry`]: the retry policy (backoff, `429`/`Retry-After`);
//! * [`services`]: the exact requests of the API record, Slack, Pushover and Pushbullet;
//! * [`terminals`]: the console broadcast, done inside the container;
//! * `xmpp`, `srv` and `relay` (feature `relay`): the XMPP client, how it finds the server
//!   (SRV records), and the daemon.

pub mod dedup;
pub mod protocol;
pub mod retry;
pub mod services;
pub mod terminals;

#[cfg(feature = "relay")]
pub mod relay;
#[cfg(feature = "relay")]
pub mod srv;
#[cfg(feature = "relay")]
pub mod xmpp;
