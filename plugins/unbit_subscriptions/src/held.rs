//! Announces for a domain this node does not know yet, kept for a short while and checked again
//! when a new domain table arrives. A customer who adds a domain and deploys a vassal right away
//! sends the first announce before the domain reaches the node (the API, the node sync and the
//! table reload take up to a second); without this the vassal would wait for its next announce,
//! ten seconds later. A held packet is checked in full again, with the sender the kernel
//! reported when it arrived, so holding it grants nothing a fresh announce would not.

use crate::validator::Sender;
use std::collections::HashMap;

/// Longer than a domain takes to reach the node, well inside the replay window.
pub const HOLD_SECS: i64 = 15;
/// One slot per container and domain; a flood of names fills the table and no more.
pub const MAX_HELD: usize = 1024;

pub struct Held {
    pub sender: Sender,
    pub key: String,
    pub packet: Vec<u8>,
    pub received: i64,
}

#[derive(Default)]
pub struct HeldAnnounces {
    entries: HashMap<(u32, String), Held>,
}

impl HeldAnnounces {
    /// Keeps the newest announce of `sender.uid` for `key`.
    pub fn hold(&mut self, sender: Sender, key: &str, packet: &[u8], now: i64) {
        let slot = (sender.uid, key.to_string());
        if self.entries.len() >= MAX_HELD && !self.entries.contains_key(&slot) {
            return;
        }
        self.entries.insert(slot, Held { sender, key: key.to_string(), packet: packet.to_vec(), received: now });
    }

    /// Takes out every held announce still young enough to be checked again.
    pub fn take(&mut self, now: i64) -> Vec<Held> {
        self.entries.drain().map(|(_, h)| h).filter(|h| now - h.received <= HOLD_SECS).collect()
    }

    /// Puts back one that is still waiting for its domain, with its original arrival time.
    pub fn put_back(&mut self, held: Held) {
        self.entries.insert((held.sender.uid, held.key.clone()), held);
    }

    pub fn expire(&mut self, now: i64) {
        self.entries.retain(|_, h| now - h.received <= HOLD_SECS);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(uid: u32) -> Sender {
        Sender { uid, pid: 1 }
    }

    #[test]
    fn one_slot_per_container_and_domain_the_newest_wins() {
        let mut h = HeldAnnounces::default();
        h.hold(s(1), "a.org", b"old", 100);
        h.hold(s(1), "a.org", b"new", 101);
        h.hold(s(2), "a.org", b"other", 101);
        let mut taken = h.take(101);
        taken.sort_by_key(|x| x.sender.uid);
        assert_eq!(taken.iter().map(|x| x.packet.as_slice()).collect::<Vec<_>>(), [b"new".as_slice(), b"other"]);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn old_announces_are_not_checked_again_and_expire() {
        let mut h = HeldAnnounces::default();
        h.hold(s(1), "a.org", b"p", 100);
        h.hold(s(1), "b.org", b"p", 110);
        h.expire(100 + HOLD_SECS + 1);
        assert_eq!(h.len(), 1);
        assert!(h.take(110 + HOLD_SECS + 1).is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut h = HeldAnnounces::default();
        for i in 0..MAX_HELD + 10 {
            h.hold(s(1), &format!("d{i}.org"), b"p", 100);
        }
        assert_eq!(h.len(), MAX_HELD);
    }
}
