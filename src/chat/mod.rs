//! Anonymous chat over the ring: rooms whose messages are records sealed
//! end to end ([`room`]), stored with an expiry at the room's owner and
//! its replicas, watched live ([`client`]), and sent through a circuit
//! of relays so that no node storing a message learns who sent it
//! ([`onion`]).

pub mod client;
pub mod onion;
pub mod room;
pub mod screen;

use std::collections::{HashSet, VecDeque};

/// The most recent keys seen, up to a bound: what a watch has sent and
/// what a client has shown, so that nothing is sent or shown twice.
#[derive(Debug)]
pub struct RecentKeys {
    keys: HashSet<Vec<u8>>,
    order: VecDeque<Vec<u8>>,
    bound: usize,
}

impl Default for RecentKeys {
    fn default() -> RecentKeys {
        RecentKeys::new(16_384)
    }
}

impl RecentKeys {
    pub fn new(bound: usize) -> RecentKeys {
        RecentKeys {
            keys: HashSet::new(),
            order: VecDeque::new(),
            bound: bound.max(1),
        }
    }

    /// Whether `key` is new; remembers it, forgetting the oldest past the
    /// bound.
    pub fn insert(&mut self, key: &[u8]) -> bool {
        if self.keys.contains(key) {
            return false;
        }
        if self.order.len() == self.bound {
            if let Some(oldest) = self.order.pop_front() {
                self.keys.remove(&oldest);
            }
        }
        self.keys.insert(key.to_vec());
        self.order.push_back(key.to_vec());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_are_reported_once_and_the_oldest_forgotten_past_the_bound() {
        let mut recent = RecentKeys::new(2);
        assert!(recent.insert(b"a"));
        assert!(!recent.insert(b"a"));
        assert!(recent.insert(b"b"));
        assert!(recent.insert(b"c"));
        // "a" was forgotten; "b" and "c" are still known.
        assert!(!recent.insert(b"c"));
        assert!(!recent.insert(b"b"));
        assert!(recent.insert(b"a"));
    }
}
