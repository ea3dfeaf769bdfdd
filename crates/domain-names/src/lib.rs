//! Domain names on a node, one rule for every part that handles them:
//!
//! * [`normalize_key`]: the form a subscription key reaches the router in. The subscription
//!   validator (`plugins/unbit_subscriptions`) applies it to every announce before it checks
//!   ownership, so `domain = Example.ORG`, `domain = bücher.example` and `domain = example.org.`
//!   reach the pool the control API's stored name (`example.org`, `xn--bcher-kva.example`)
//!   names.
//! * [`host_key`], [`host_key_in_place`]: the same form for a request's `Host` (lowercase, no
//!   port, no trailing dot), without refusing anything: the router plugin's lookup key.
//! * [`socket_file`]: the socket a vassal binds for a domain (`plugins/unbit_vassal`, used by
//!   the `domain = ...` shortcuts): readable when the name is short, bounded always.

mod host;
mod key;
mod socket;

pub use host::{host_key, host_key_in_place};
pub use key::{is_canonical, normalize_key, MAX_NAME};
pub use socket::{socket_file, vassal_id, MAX_SOCKET_FILE, PREFIX_LEN, READABLE_MAX};
