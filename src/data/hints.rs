//! Hints on a running node: writes held for a replica that could not take
//! them, delivered when it answers again, with a pause per target that
//! doubles after every failed attempt (up to [`MAX_HINT_BACKOFF`]). The
//! hint store itself, with its bounds, is [`crate::replica::hints`].

use super::{store_error, DataNode};
use crate::error::{Error, Result};
use crate::replica::hints::Hints;
use crate::ring::NodeRef;
use crate::store::{Entry, SharedEngine};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Hints delivered per request.
const HINT_BATCH: usize = 256;
/// Pause after the first failed attempt to deliver hints to one target.
const FIRST_HINT_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between two attempts to deliver hints to one target.
pub const MAX_HINT_BACKOFF: Duration = Duration::from_secs(30);

/// The hints held here and when each target may next be tried.
pub(crate) struct HintQueue {
    store: Hints<SharedEngine>,
    /// By target address: when to try next, and the pause that led there.
    backoff: Mutex<BTreeMap<String, (Instant, Duration)>>,
}

impl HintQueue {
    pub(crate) fn new(store: Hints<SharedEngine>) -> HintQueue {
        HintQueue {
            store,
            backoff: Mutex::new(BTreeMap::new()),
        }
    }

    fn due(&self, addr: &str, now: Instant) -> bool {
        self.backoff
            .lock()
            .expect("backoff lock")
            .get(addr)
            .is_none_or(|(next, _)| now >= *next)
    }

    /// A failed attempt: the pause before the next one doubles.
    fn failed(&self, addr: &str, now: Instant) -> Duration {
        let mut backoff = self.backoff.lock().expect("backoff lock");
        let pause = backoff.get(addr).map_or(FIRST_HINT_BACKOFF, |(_, pause)| {
            (*pause * 2).min(MAX_HINT_BACKOFF)
        });
        backoff.insert(addr.to_string(), (now + pause, pause));
        pause
    }

    fn delivered(&self, addr: &str) {
        self.backoff.lock().expect("backoff lock").remove(addr);
    }
}

impl DataNode {
    /// Leaves `entry` for `target` with the first fallback that takes it,
    /// or, failing that, here.
    pub(super) async fn hint(&self, target: &NodeRef, entry: &Entry, fallbacks: &[NodeRef]) {
        let entries = std::slice::from_ref(entry);
        for fallback in fallbacks {
            if self.copy_to(fallback, entries, Some(target)).await.is_ok() {
                tracing::debug!(%target, holder = %fallback, "hint left");
                return;
            }
        }
        match self.hints.store.add(target, entry) {
            Ok(true) => tracing::debug!(%target, "hint kept here"),
            Ok(false) => {
                tracing::warn!(%target, "the hint store is full; anti-entropy will repair the replica")
            }
            Err(error) => tracing::warn!(%target, "cannot keep a hint: {error}"),
        }
    }

    /// Records received from another process: copies to apply, or hints
    /// to hold for `hint_for`. Returns how many were applied or held.
    pub fn accept_copies(&self, entries: &[Entry], hint_for: Option<&NodeRef>) -> Result<u64> {
        let Some(target) = hint_for else {
            return Ok(self.absorb(entries)? as u64);
        };
        let mut held = 0;
        for entry in entries {
            if !self.hints.store.add(target, entry).map_err(store_error)? {
                return Err(Error::Unavailable("this node's hint store is full".into()));
            }
            held += 1;
        }
        Ok(held)
    }

    /// Hints held now.
    pub fn hints_held(&self) -> u64 {
        self.hints.store.len()
    }

    /// Tries to deliver the hints held for every target whose pause is
    /// over; a target that answers gets all of its hints, batch by batch.
    pub async fn deliver_hints(&self) {
        let targets = match self.hints.store.targets() {
            Ok(targets) => targets,
            Err(error) => {
                tracing::warn!("cannot read the hints: {error}");
                return;
            }
        };
        for addr in targets {
            if !self.hints.due(&addr, self.clock.now()) {
                continue;
            }
            let mut delivered = 0;
            loop {
                let batch = match self.hints.store.batch(&addr, HINT_BATCH) {
                    Ok(batch) if !batch.is_empty() => batch,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!("cannot read the hints for {addr}: {error}");
                        break;
                    }
                };
                let entries: Vec<Entry> = batch.iter().map(|h| h.entry.clone()).collect();
                if self
                    .copy_to(&batch[0].target, &entries, None)
                    .await
                    .is_err()
                {
                    self.hints.failed(&addr, self.clock.now());
                    break;
                }
                if let Err(error) = self.hints.store.remove(&batch) {
                    tracing::warn!("cannot forget delivered hints: {error}");
                    break;
                }
                delivered += batch.len();
            }
            if delivered > 0 {
                self.hints.delivered(&addr);
                tracing::info!(target = %addr, "delivered {delivered} hinted writes");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryEngine;
    use std::sync::Arc;

    #[test]
    fn each_failed_attempt_doubles_the_pause_up_to_the_longest_and_a_delivery_resets_it() {
        let engine: SharedEngine = Arc::new(MemoryEngine::new());
        let queue = HintQueue::new(Hints::open(engine).unwrap());
        let start = Instant::now();
        assert!(queue.due("a:1", start), "never tried: due at once");
        let mut pauses = Vec::new();
        let mut now = start;
        for _ in 0..7 {
            let pause = queue.failed("a:1", now);
            assert!(!queue.due("a:1", now), "due right after failing");
            assert!(queue.due("a:1", now + pause));
            pauses.push(pause.as_secs());
            now += pause;
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
        // Another target keeps its own pause; a delivery forgets this one's.
        assert!(queue.due("b:1", start));
        queue.delivered("a:1");
        assert!(queue.due("a:1", start));
        assert_eq!(queue.failed("a:1", start), FIRST_HINT_BACKOFF);
    }
}
