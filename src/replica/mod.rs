//! Replication policy: who holds the copies of a key, how many must answer,
//! and the writes held for a replica that could not be reached. Depends on
//! `id`, `ring` (for member references) and `store` (the hints' engine).
//!
//! The *preference list* of a key is its owner, then the members that
//! follow the owner on the ring, skipping every member whose process is
//! already in the list, until it names `N` distinct processes
//! ([`preference_from`]). Two virtual nodes of one process never hold two
//! of a key's copies. When the owner's successor list names too few
//! processes (many virtual nodes per process), the data layer extends it
//! with the successor lists of the members at its end.
//!
//! On a ring of fewer than `N` processes every process holds a copy, and
//! the node's default `W` and `R` count at most the processes there are
//! ([`Quorums::effective`]): a one-node development ring answers writes.
//! A quorum given with the request (`put --w 3`) is never cut: asking for
//! three copies on a ring of two is answered "unavailable".
//!
//! Hints ([`hints`]) are writes a process keeps for a replica it could not
//! reach, delivered when that replica answers again.

pub mod hints;

use crate::ring::NodeRef;
use std::time::Duration;

/// Processes beyond the preference list that are tried, in order, to hold
/// a hint for a replica that did not answer.
pub const FALLBACKS: usize = 2;
/// The most copies a ring may keep.
pub const MAX_REPLICAS: usize = 16;

/// `N`, `W` and `R`, and the rhythm of anti-entropy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// Copies of every key, on distinct processes (`--replicas`).
    pub replicas: usize,
    /// Acknowledgements a write waits for, the owner's included.
    pub write_quorum: usize,
    /// Answers a read gathers, the owner's included.
    pub read_quorum: usize,
    /// Time between two anti-entropy rounds of a member's arc; zero turns
    /// background rounds off (`chordal repair` still runs one).
    pub anti_entropy_interval: Duration,
    /// How long a delete's tombstone is kept (`--tombstone-grace`); zero
    /// keeps tombstones for ever. Every replica must have been reached by
    /// anti-entropy within it, or a replica that missed the delete can
    /// bring the value back once the tombstone is purged.
    pub tombstone_grace: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            replicas: 3,
            write_quorum: 2,
            read_quorum: 2,
            anti_entropy_interval: Duration::from_secs(60),
            tombstone_grace: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl ReplicationConfig {
    /// Checks `1 <= W, R <= N <= MAX_REPLICAS`, and that tombstones outlive
    /// at least two anti-entropy intervals.
    pub fn validate(&self) -> Result<(), String> {
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(format!(
                "--replicas must be between 1 and {MAX_REPLICAS}, not {}",
                self.replicas
            ));
        }
        for (flag, value) in [
            ("--write-quorum", self.write_quorum),
            ("--read-quorum", self.read_quorum),
        ] {
            if value == 0 || value > self.replicas {
                return Err(format!(
                    "{flag} must be between 1 and --replicas ({}), not {value}",
                    self.replicas
                ));
            }
        }
        let interval = self.anti_entropy_interval;
        let grace = self.tombstone_grace;
        if !grace.is_zero() && !interval.is_zero() && grace < 2 * interval {
            return Err(format!(
                "--tombstone-grace ({grace:?}) must be at least two --anti-entropy-interval ({interval:?}): \
                 a tombstone purged before anti-entropy copied it everywhere lets the deleted value come back"
            ));
        }
        Ok(())
    }

    /// Tombstones written at `now_ms` expire (and are purged) then; never
    /// with a zero grace.
    pub fn tombstone_expiry(&self, now_ms: u64) -> Option<u64> {
        (!self.tombstone_grace.is_zero())
            .then(|| now_ms.saturating_add(self.tombstone_grace.as_millis() as u64))
    }

    /// The quorum a request asked for (0: this node's default), checked
    /// against `N`.
    pub fn requested(&self, asked: u32, default: usize, what: &str) -> Result<Quorum, String> {
        match asked as usize {
            0 => Ok(Quorum::Default(default)),
            n if n <= self.replicas => Ok(Quorum::Asked(n)),
            n => Err(format!(
                "a {what} quorum of {n} is more than the {} copies this ring keeps (--replicas)",
                self.replicas
            )),
        }
    }
}

/// The other processes of a key's preference list, as far as known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preference {
    /// The members after the owner, one per distinct process, in ring
    /// order: the first `N - 1` hold copies, the rest are fallbacks for
    /// hints.
    pub others: Vec<NodeRef>,
    /// The walk went round the whole ring: there are no more processes.
    pub whole_ring: bool,
}

impl Preference {
    /// The members holding the other `N - 1` copies.
    pub fn replicas(&self, replicas: usize) -> &[NodeRef] {
        &self.others[..self.others.len().min(replicas.saturating_sub(1))]
    }

    /// The members after the replicas, to hold hints.
    pub fn fallbacks(&self, replicas: usize) -> &[NodeRef] {
        &self.others[self.replicas(replicas).len()..]
    }

    /// Whether the list names as many processes as a complete one would.
    pub fn is_complete(&self, replicas: usize) -> bool {
        self.whole_ring || self.others.len() >= replicas.saturating_sub(1) + FALLBACKS
    }
}

/// The members after `owner` in `ring_order` (a successor list, possibly
/// extended), one per process other than the owner's, at most `wanted`.
pub fn preference_from(owner: &NodeRef, ring_order: &[NodeRef], wanted: usize) -> Preference {
    let mut others: Vec<NodeRef> = Vec::new();
    let mut whole_ring = false;
    for member in ring_order {
        if member.id == owner.id {
            whole_ring = true;
            break;
        }
        if others.len() == wanted {
            break;
        }
        if member.addr != owner.addr && others.iter().all(|o| o.addr != member.addr) {
            others.push(member.clone());
        }
    }
    Preference { others, whole_ring }
}

/// How many of the members in `backwards` (a walk back round the ring from
/// one of this process's members: its predecessor, that member's
/// predecessor, and so on) have this process (`here`) in their preference
/// lists for `replicas` copies: the arcs of those members are copied here.
///
/// A member names this process when fewer than `replicas - 1` other
/// processes stand between the two; the count only grows further back, so
/// the walk stops at the first member that does not, and at the first
/// member of this process (the arcs before it are that member's walk).
pub fn copied_here(here: &str, backwards: &[NodeRef], replicas: usize) -> usize {
    let mut between: Vec<&str> = Vec::new();
    for (walked, member) in backwards.iter().enumerate() {
        if member.addr == here {
            return walked;
        }
        let others = between.iter().filter(|p| **p != member.addr).count();
        if others + 1 >= replicas {
            return walked;
        }
        if !between.contains(&member.addr.as_str()) {
            between.push(&member.addr);
        }
    }
    backwards.len()
}

/// A quorum as a request states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// The node's `--write-quorum` or `--read-quorum`: cut to the ring's
    /// size when the ring has fewer than `N` processes.
    Default(usize),
    /// Given with the request: taken as it is.
    Asked(usize),
}

/// The quorums of one request, given what is known of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorums {
    /// Copies the key has: `N`, or fewer on a ring of fewer processes.
    pub copies: usize,
    /// Answers needed, the owner's included.
    pub needed: usize,
}

impl Quorums {
    /// `N`, and the quorum a request needs, given what a walk of the ring
    /// found.
    pub fn effective(replicas: usize, quorum: Quorum, preference: &Preference) -> Quorums {
        let copies = if preference.whole_ring {
            replicas.min(1 + preference.others.len())
        } else {
            replicas
        };
        let needed = match quorum {
            Quorum::Default(quorum) => quorum.min(copies),
            Quorum::Asked(quorum) => quorum,
        };
        Quorums { copies, needed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn member(id: u64, process: u8) -> NodeRef {
        NodeRef::new(Id(id), format!("10.0.0.{process}:1"))
    }

    #[test]
    fn the_preference_list_skips_virtual_nodes_of_processes_already_in_it() {
        let owner = member(10, 1);
        let ring = [
            member(20, 1),
            member(30, 2),
            member(40, 2),
            member(50, 3),
            member(60, 1),
            member(70, 4),
            member(80, 5),
        ];
        let preference = preference_from(&owner, &ring, 4);
        let processes: Vec<&str> = preference.others.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(
            processes,
            ["10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1", "10.0.0.5:1"]
        );
        assert_eq!(preference.replicas(3), &[member(30, 2), member(50, 3)]);
        assert_eq!(preference.fallbacks(3), &[member(70, 4), member(80, 5)]);
        assert!(!preference.whole_ring);
        assert!(preference.is_complete(3));
    }

    #[test]
    fn a_small_ring_holds_one_copy_per_process_and_quorums_shrink_to_fit() {
        let owner = member(10, 1);
        // A two-process ring: the walk comes back to the owner.
        let ring = [member(20, 2), member(30, 1), member(40, 2), member(10, 1)];
        let preference = preference_from(&owner, &ring, 4);
        assert!(preference.whole_ring);
        assert_eq!(preference.others, vec![member(20, 2)]);
        assert_eq!(
            Quorums::effective(3, Quorum::Default(2), &preference),
            Quorums {
                copies: 2,
                needed: 2
            }
        );
        // Asked for with the request, a quorum is not cut.
        assert_eq!(
            Quorums::effective(3, Quorum::Asked(3), &preference),
            Quorums {
                copies: 2,
                needed: 3
            }
        );
        let alone = preference_from(&owner, &[member(30, 1), member(10, 1)], 4);
        assert_eq!(
            Quorums::effective(3, Quorum::Default(2), &alone),
            Quorums {
                copies: 1,
                needed: 1
            }
        );
        // A partial walk says nothing about the ring's size.
        let partial = preference_from(&owner, &[member(20, 2)], 4);
        assert_eq!(
            Quorums::effective(3, Quorum::Default(2), &partial),
            Quorums {
                copies: 3,
                needed: 2
            }
        );
        assert!(!partial.is_complete(3));
    }

    #[test]
    fn quorums_are_checked_against_the_copies_kept() {
        let config = ReplicationConfig::default();
        assert!(config.validate().is_ok());
        for (grace, interval) in [(0, 60), (120, 60), (1, 0)] {
            let config = ReplicationConfig {
                tombstone_grace: Duration::from_secs(grace),
                anti_entropy_interval: Duration::from_secs(interval),
                ..ReplicationConfig::default()
            };
            assert!(config.validate().is_ok(), "{config:?}");
        }
        assert_eq!(config.requested(0, 2, "write"), Ok(Quorum::Default(2)));
        assert_eq!(config.requested(3, 2, "write"), Ok(Quorum::Asked(3)));
        assert!(config.requested(4, 2, "write").is_err());
        for bad in [
            ReplicationConfig {
                write_quorum: 4,
                ..ReplicationConfig::default()
            },
            ReplicationConfig {
                read_quorum: 0,
                ..ReplicationConfig::default()
            },
            ReplicationConfig {
                replicas: 0,
                ..ReplicationConfig::default()
            },
            ReplicationConfig {
                tombstone_grace: Duration::from_secs(90),
                ..ReplicationConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tombstones_expire_after_the_grace_and_never_with_a_zero_grace() {
        let config = ReplicationConfig {
            tombstone_grace: Duration::from_secs(90),
            ..ReplicationConfig::default()
        };
        assert_eq!(config.tombstone_expiry(1_000), Some(91_000));
        let forever = ReplicationConfig {
            tombstone_grace: Duration::ZERO,
            ..ReplicationConfig::default()
        };
        assert_eq!(forever.tombstone_expiry(1_000), None);
    }

    proptest::proptest! {
        /// Brute force: on a random ring, a member's arc is copied to a
        /// process exactly when its preference list names that process.
        #[test]
        fn copied_here_agrees_with_every_preference_list(
            processes in proptest::collection::vec(1u8..6, 2..24),
            replicas in 1usize..5,
        ) {
            let ring: Vec<NodeRef> = processes
                .iter()
                .enumerate()
                .map(|(i, &p)| member(10 * (i as u64 + 1), p))
                .collect();
            let n = ring.len();
            for (at, mine) in ring.iter().enumerate() {
                let here = mine.addr.as_str();
                let backwards: Vec<NodeRef> =
                    (1..n).map(|back| ring[(at + n - back) % n].clone()).collect();
                let copied = copied_here(here, &backwards, replicas);
                for (walked, owner) in backwards.iter().enumerate() {
                    if owner.addr == here {
                        proptest::prop_assert!(walked >= copied);
                        break;
                    }
                    let from = (at + n - walked - 1) % n;
                    let successors: Vec<NodeRef> =
                        (1..=n).map(|k| ring[(from + k) % n].clone()).collect();
                    let names_here = preference_from(owner, &successors, replicas.saturating_sub(1))
                        .replicas(replicas)
                        .iter()
                        .any(|m| m.addr == here);
                    proptest::prop_assert_eq!(names_here, walked < copied, "owner {}", owner);
                }
            }
        }
    }
}
