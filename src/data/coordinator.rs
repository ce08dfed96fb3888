//! The coordinator: a client's request, taken by any process, carried to
//! the key's owner. It looks the key up (or remembers the arc from an
//! earlier lookup), tries the members of the answer's successor list in
//! turn, follows the `NotOwner` hint of a member that no longer owns the
//! key, and retries with fresh lookups and growing pauses until the retry
//! budget is spent.

use super::{DataNode, NotOwner, ReadAnswer, Value, WriteAnswer, WriteOp, Written};
use crate::error::{printable, Error, Result};
use crate::id::{between_open_closed, Id};
use crate::ring::{LookupOutcome, NodeRef};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl DataNode {
    /// Stores a value (or, with `op.delete`, a tombstone) at the key's owner.
    pub async fn put(self: &Arc<Self>, op: WriteOp) -> Result<Written> {
        self.validate(&op.key, &op.value, op.ttl_ms)?;
        self.requested_quorum(op.write_quorum, true)?;
        let key = op.key.clone();
        self.route(&key, |owner| {
            let op = op.clone();
            async move {
                let answer = if owner.addr == self.addr {
                    self.write_as_owner(owner.id, op).await
                } else {
                    self.peers.write(&owner, &op).await
                }?;
                Ok(match answer {
                    WriteAnswer::Written {
                        version,
                        existed,
                        acks,
                    } => Ok(Written {
                        version,
                        existed,
                        owner,
                        acks,
                    }),
                    WriteAnswer::NotOwner(not_owner) => Err(not_owner),
                })
            }
        })
        .await
    }

    /// The live value under `key`, from its owner and `read_quorum - 1`
    /// replicas (0: the owner's `--read-quorum`).
    pub async fn get(self: &Arc<Self>, key: &[u8], read_quorum: u32) -> Result<Value> {
        self.validate(key, &[], 0)?;
        self.requested_quorum(read_quorum, false)?;
        let found = self
            .route(key, |owner| async move {
                let answer = if owner.addr == self.addr {
                    self.read_as_owner(owner.id, key, read_quorum).await
                } else {
                    self.peers.read(&owner, key, false, read_quorum).await
                }?;
                Ok(match answer {
                    ReadAnswer::Found(record) => Ok(Some((record, owner))),
                    ReadAnswer::Missing => Ok(None),
                    ReadAnswer::NotOwner(not_owner) => Err(not_owner),
                })
            })
            .await?;
        match found {
            Some((record, owner)) if !record.tombstone && !record.is_expired(self.wall_ms()) => {
                Ok(Value {
                    value: record.value,
                    version: record.version,
                    expires_at: record.expires_at,
                    owner: Some(owner),
                })
            }
            _ => Err(Error::NotFound(format!(
                "no value under {}",
                printable(key)
            ))),
        }
    }

    /// This process's own live value of `key`, without routing.
    pub fn get_local(&self, key: &[u8]) -> Result<Value> {
        self.validate(key, &[], 0)?;
        match self.read_local(key)? {
            Some(record) if !record.tombstone => Ok(Value {
                value: record.value,
                version: record.version,
                expires_at: record.expires_at,
                owner: None,
            }),
            _ => Err(Error::NotFound(format!(
                "this node holds no value under {}",
                printable(key)
            ))),
        }
    }

    /// Runs `attempt` against the key's owner: the first member of the
    /// lookup's successor list that answers, following `NotOwner` hints,
    /// with fresh lookups and growing pauses until the retry budget is
    /// spent.
    async fn route<T, F, Fut>(&self, key: &[u8], attempt: F) -> Result<T>
    where
        F: Fn(NodeRef) -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, NotOwner>>>,
    {
        const MAX_TRIES_PER_LOOKUP: usize = 8;
        let key_id = Id::of_key(key);
        let deadline = self.clock.now() + self.config.retry_budget;
        let mut pause = Duration::from_millis(25);
        let mut last_problem = String::from("no attempt was made");
        // A route remembered from an earlier lookup saves the lookup; the
        // owner's own check makes a stale one cost a retry, never a wrong
        // answer.
        let mut cached = self.routes.find(key_id);
        loop {
            let candidates = match cached.take() {
                Some(candidates) => Ok((candidates, true)),
                None => self.router.lookup(key_id).await.map(|outcome| {
                    self.routes.remember(&outcome);
                    (owner_candidates(&outcome), false)
                }),
            };
            let from_cache = match candidates {
                Ok((mut candidates, from_cache)) => {
                    let mut tries = 0;
                    while let Some(target) = candidates.pop() {
                        if tries == MAX_TRIES_PER_LOOKUP {
                            break;
                        }
                        tries += 1;
                        match attempt(target.clone()).await {
                            Ok(Ok(answer)) => {
                                // The remembered arc named someone else
                                // first: forget it, so the next request
                                // looks the owner up instead of waiting
                                // on a member that is gone or cut off.
                                if tries > 1 {
                                    self.routes.forget(key_id);
                                }
                                return Ok(answer);
                            }
                            Ok(Err(not_owner)) => {
                                last_problem = format!("{target}: {}", not_owner.reason);
                                if let Some(hint) = not_owner.hint {
                                    candidates.push(hint);
                                }
                            }
                            Err(
                                error @ (Error::InvalidArgument(_)
                                | Error::NotFound(_)
                                | Error::Quorum(_)),
                            ) => return Err(error),
                            Err(error) => last_problem = format!("{target}: {error}"),
                        }
                    }
                    from_cache
                }
                Err(error) => {
                    last_problem = error.to_string();
                    false
                }
            };
            if from_cache {
                self.routes.forget(key_id);
                continue; // straight to a fresh lookup
            }
            if self.clock.now() + pause > deadline {
                return Err(Error::Unavailable(format!(
                    "the owner of {} could not be reached within {}: {last_problem}",
                    printable(key),
                    humantime::format_duration(self.config.retry_budget)
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// Arcs learned from lookups, by owner id: the arc's start (the lookup's
/// predecessor) and the successor list that answered.
#[derive(Default)]
pub(crate) struct RouteCache {
    arcs: Mutex<BTreeMap<Id, (Id, Vec<NodeRef>)>>,
}

impl RouteCache {
    /// More arcs than a ring of 1024 processes of 16 members has.
    const MAX_ARCS: usize = 16_384;

    /// Whom to try for `key`, last first, if a remembered arc holds it.
    pub(crate) fn find(&self, key: Id) -> Option<Vec<NodeRef>> {
        let arcs = self.arcs.lock().expect("route cache lock");
        // The arc holding `key` is the one of the first owner at or after it.
        let (owner, (start, successors)) =
            arcs.range(key..).next().or_else(|| arcs.iter().next())?;
        between_open_closed(*start, key, *owner).then(|| successors.iter().rev().cloned().collect())
    }

    pub(crate) fn remember(&self, outcome: &LookupOutcome) {
        let mut arcs = self.arcs.lock().expect("route cache lock");
        if arcs.len() >= Self::MAX_ARCS {
            arcs.clear();
        }
        let owner = outcome.owner().id;
        // Arcs the new one overlaps are out of date.
        arcs.retain(|id, (start, _)| {
            *id == owner
                || !(between_open_closed(outcome.predecessor.id, *id, owner)
                    || between_open_closed(*start, owner, *id))
        });
        arcs.insert(owner, (outcome.predecessor.id, outcome.successors.clone()));
    }

    pub(crate) fn forget(&self, key: Id) {
        let mut arcs = self.arcs.lock().expect("route cache lock");
        let owner = arcs
            .range(key..)
            .next()
            .or_else(|| arcs.iter().next())
            .map(|(owner, _)| *owner);
        if let Some(owner) = owner {
            arcs.remove(&owner);
        }
    }
}

/// Whom to try, last first: the lookup's successor list, owner at the end.
fn owner_candidates(outcome: &LookupOutcome) -> Vec<NodeRef> {
    outcome.successors.iter().rev().cloned().collect()
}
