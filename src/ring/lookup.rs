//! Iterative lookup as a small pure state machine.
//!
//! A lookup for `target` asks one process at a time for a `FindStep`. Each
//! answer is either `Found` (the answering process holds the member that
//! precedes the target, and with it the owner) or `Closer` (members nearer the
//! target, by clockwise distance). The lookup always asks the best untried
//! candidate it knows, so a dead or unhelpful hop costs one step and the next
//! best is tried instead; no process is asked twice, and a hop limit bounds
//! the walk even when tables are badly wrong: it counts every ask, answered
//! or not.
//!
//! Hops are counted per physical process: the number of `FindStep` requests
//! that received an answer. A lookup answered from the starting process's own
//! tables takes zero hops.

use super::message::{Addr, NodeRef, Response};
use crate::id::Id;
use std::collections::HashSet;

/// At most this many candidates are taken from one answer.
pub const MAX_CANDIDATES_PER_ANSWER: usize = 8;

/// Where a lookup ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupOutcome {
    pub target: Id,
    /// The member that precedes the target (the last hop's member).
    pub predecessor: NodeRef,
    /// The predecessor's successor list; its first entry owns the target.
    pub successors: Vec<NodeRef>,
    /// The processes asked, in order, that answered.
    pub path: Vec<Addr>,
}

impl LookupOutcome {
    /// The owner of the target: the predecessor's first successor.
    pub fn owner(&self) -> &NodeRef {
        &self.successors[0]
    }

    /// Remote processes that answered on the way.
    pub fn hops(&self) -> usize {
        self.path.len()
    }
}

/// Why a lookup gave up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no live process could route the lookup (unreachable: {})", unreachable.join(", "))]
    NoRoute { unreachable: Vec<Addr> },
    #[error("lookup exceeded {0} hops")]
    TooManyHops(usize),
    #[error("this node is already running {0} lookups; try again")]
    Busy(usize),
}

/// What the driver of a lookup should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send a `FindStep` to this process.
    Ask(Addr),
    Done(Result<LookupOutcome, LookupError>),
}

/// One lookup in progress.
#[derive(Clone, Debug)]
pub struct Lookup {
    target: Id,
    /// Known members not yet asked, any order; the best is picked each time.
    candidates: Vec<NodeRef>,
    /// An address to ask before any candidate (a bootstrap seed, whose ids
    /// are unknown).
    seed: Option<Addr>,
    asked: HashSet<Addr>,
    unreachable: Vec<Addr>,
    path: Vec<Addr>,
    max_hops: usize,
    outcome: Option<Result<LookupOutcome, LookupError>>,
}

impl Lookup {
    /// Starts a lookup from the answer of the starting process's own tables.
    /// `origin` is that process, which is never asked again.
    pub fn new(target: Id, origin: &str, local: Response, max_hops: usize) -> Lookup {
        let mut lookup = Lookup::empty(target, max_hops);
        lookup.asked.insert(origin.to_string());
        lookup.absorb(local);
        lookup
    }

    /// Starts a lookup by asking `seed`, a process known only by address.
    /// `origin`, the process running the lookup, is never asked.
    pub fn via_seed(target: Id, origin: &str, seed: Addr, max_hops: usize) -> Lookup {
        let mut lookup = Lookup::empty(target, max_hops);
        lookup.asked.insert(origin.to_string());
        lookup.seed = Some(seed);
        lookup
    }

    fn empty(target: Id, max_hops: usize) -> Lookup {
        Lookup {
            target,
            candidates: Vec::new(),
            seed: None,
            asked: HashSet::new(),
            unreachable: Vec::new(),
            path: Vec::new(),
            max_hops,
            outcome: None,
        }
    }

    pub fn target(&self) -> Id {
        self.target
    }

    /// The next thing to do. `Ask` marks that process as asked.
    pub fn next_step(&mut self) -> Next {
        if let Some(outcome) = &self.outcome {
            return Next::Done(outcome.clone());
        }
        // Unanswered asks count too: a peer naming many dead or bogus
        // members must not keep a lookup going for ever.
        if self.path.len() + self.unreachable.len() >= self.max_hops {
            return self.finish(Err(LookupError::TooManyHops(self.max_hops)));
        }
        if let Some(seed) = self.seed.take() {
            if self.asked.insert(seed.clone()) {
                return Next::Ask(seed);
            }
        }
        // The untried candidate closest before the target.
        let target = self.target;
        self.candidates.retain(|c| !self.asked.contains(&c.addr));
        let best = self
            .candidates
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.id.distance_to(target))
            .map(|(index, _)| index);
        match best {
            Some(index) => {
                let addr = self.candidates.swap_remove(index).addr;
                self.asked.insert(addr.clone());
                Next::Ask(addr)
            }
            None => self.finish(Err(LookupError::NoRoute {
                unreachable: self.unreachable.clone(),
            })),
        }
    }

    /// `from` answered the `FindStep` it was asked.
    pub fn on_answer(&mut self, from: &str, answer: Response) {
        match answer {
            Response::Found { .. } | Response::Closer { .. } => {
                self.path.push(from.to_string());
                self.absorb(answer);
            }
            // A process with no joined member cannot route; try the next.
            _ => {}
        }
    }

    /// `from` did not answer (timeout, refused, transport error).
    pub fn on_failure(&mut self, from: &str) {
        self.unreachable.push(from.to_string());
    }

    fn absorb(&mut self, answer: Response) {
        match answer {
            Response::Found {
                predecessor,
                successors,
            } if !successors.is_empty() => {
                self.outcome = Some(Ok(LookupOutcome {
                    target: self.target,
                    predecessor,
                    successors,
                    path: self.path.clone(),
                }));
            }
            Response::Closer { candidates } => {
                let target = self.target;
                self.candidates.extend(
                    candidates
                        .into_iter()
                        .take(MAX_CANDIDATES_PER_ANSWER)
                        .filter(|c| c.id != target && !self.asked.contains(&c.addr)),
                );
            }
            _ => {}
        }
    }

    fn finish(&mut self, outcome: Result<LookupOutcome, LookupError>) -> Next {
        self.outcome = Some(outcome.clone());
        Next::Done(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, addr: &str) -> NodeRef {
        NodeRef::new(Id(id), addr)
    }

    #[test]
    fn found_locally_takes_no_hops() {
        let local = Response::Found {
            predecessor: node(10, "a"),
            successors: vec![node(20, "b")],
        };
        let mut lookup = Lookup::new(Id(15), "a", local, 8);
        match lookup.next_step() {
            Next::Done(Ok(outcome)) => {
                assert_eq!(outcome.owner(), &node(20, "b"));
                assert_eq!(outcome.hops(), 0);
            }
            other => panic!("expected a local answer, got {other:?}"),
        }
    }

    #[test]
    fn asks_the_closest_preceding_candidate_first_and_skips_the_dead() {
        let local = Response::Closer {
            candidates: vec![node(10, "b"), node(50, "c"), node(40, "d")],
        };
        let mut lookup = Lookup::new(Id(60), "a", local, 8);
        assert_eq!(lookup.next_step(), Next::Ask("c".into()));
        lookup.on_failure("c");
        assert_eq!(lookup.next_step(), Next::Ask("d".into()));
        lookup.on_answer(
            "d",
            Response::Found {
                predecessor: node(55, "e"),
                successors: vec![node(70, "f")],
            },
        );
        match lookup.next_step() {
            Next::Done(Ok(outcome)) => {
                assert_eq!(outcome.owner().addr, "f");
                assert_eq!(outcome.path, vec!["d".to_string()]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn never_asks_a_process_twice_nor_itself() {
        let local = Response::Closer {
            candidates: vec![node(10, "b")],
        };
        let mut lookup = Lookup::new(Id(60), "a", local, 8);
        assert_eq!(lookup.next_step(), Next::Ask("b".into()));
        lookup.on_answer(
            "b",
            Response::Closer {
                candidates: vec![node(11, "b"), node(12, "a")],
            },
        );
        assert!(matches!(
            lookup.next_step(),
            Next::Done(Err(LookupError::NoRoute { .. }))
        ));
    }

    #[test]
    fn a_dead_seed_is_reported() {
        let mut lookup = Lookup::via_seed(Id(1), "a", "seed:1".into(), 8);
        assert_eq!(lookup.next_step(), Next::Ask("seed:1".into()));
        lookup.on_failure("seed:1");
        assert_eq!(
            lookup.next_step(),
            Next::Done(Err(LookupError::NoRoute {
                unreachable: vec!["seed:1".into()]
            }))
        );
    }

    #[test]
    fn unanswered_asks_count_against_the_hop_limit() {
        // A peer names many members that never answer.
        let bogus: Vec<NodeRef> = (0..50).map(|i| node(i, &format!("bogus{i}"))).collect();
        let mut lookup = Lookup::new(
            Id(1_000),
            "origin",
            Response::Closer { candidates: bogus },
            5,
        );
        let mut asks = 0;
        while let Next::Ask(addr) = lookup.next_step() {
            asks += 1;
            lookup.on_failure(&addr);
        }
        assert_eq!(asks, 5);
    }

    #[test]
    fn hop_limit_stops_a_walk() {
        let mut lookup = Lookup::via_seed(Id(1_000), "origin", "p0".into(), 3);
        for hop in 0..3u64 {
            let Next::Ask(addr) = lookup.next_step() else {
                panic!("stopped early")
            };
            lookup.on_answer(
                &addr,
                Response::Closer {
                    candidates: vec![node(hop + 1, &format!("p{}", hop + 1))],
                },
            );
        }
        assert_eq!(
            lookup.next_step(),
            Next::Done(Err(LookupError::TooManyHops(3)))
        );
    }

    /// Candidates of distinct processes, ids `first..first + count`.
    fn candidates(first: u64, count: u64) -> Vec<NodeRef> {
        (first..first + count)
            .map(|i| node(i, &format!("p{i}")))
            .collect()
    }

    #[test]
    fn one_answer_gives_at_most_eight_candidates() {
        let max_hops = crate::ring::Config::default().max_lookup_hops;
        let local = Response::Closer {
            candidates: candidates(0, 20),
        };
        let mut lookup = Lookup::new(Id(1_000), "origin", local, max_hops);
        let mut asked = Vec::new();
        while let Next::Ask(addr) = lookup.next_step() {
            lookup.on_failure(&addr);
            asked.push(addr);
        }
        assert_eq!(asked.len(), MAX_CANDIDATES_PER_ANSWER);
        assert_eq!(MAX_CANDIDATES_PER_ANSWER, 8);
    }

    #[test]
    fn a_lookup_makes_at_most_sixty_four_asks_answered_or_not() {
        // Every process asked names eight more, and every other one does
        // not answer: the walk could go on for ever.
        let max_hops = crate::ring::Config::default().max_lookup_hops;
        assert_eq!(max_hops, 64);
        let mut lookup = Lookup::via_seed(Id(u64::MAX), "origin", "p0".into(), max_hops);
        let mut asks = 0u64;
        let mut next_id = 1;
        while let Next::Ask(addr) = lookup.next_step() {
            asks += 1;
            if asks % 2 == 0 {
                lookup.on_failure(&addr);
                continue;
            }
            let named = candidates(next_id, 8);
            next_id += 8;
            lookup.on_answer(&addr, Response::Closer { candidates: named });
        }
        assert_eq!(asks, 64);
        assert_eq!(
            lookup.next_step(),
            Next::Done(Err(LookupError::TooManyHops(64)))
        );
    }
}
