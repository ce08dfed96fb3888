//! Arcs moving between processes: to a member that joins, and away from a
//! process that leaves.
//!
//! Join ([`DataNode::take_over`]): a new member registers a hand-off from
//! its successor as soon as it joins. Until it has every record of its
//! arc, it answers reads with the newer of its own copy and the old
//! owner's (a read-through), and observes the old owner's version before
//! writing, so nothing written before the join is shadowed. It fetches the
//! arc only once the old owner has seen it as predecessor: from then on the
//! old owner refuses writes to the arc, and a barrier lets the writes
//! already under way finish before the first record is read, so the stream
//! misses none. The stream resumes after the last key received when it
//! breaks.
//!
//! Leave ([`DataNode::hand_off_on_leave`]): refuse new writes, wait out the
//! ones under way, and push every member's arc to its first successor on
//! another process before the node says goodbye.

use super::{store_error, BatchStream, DataNode, Entry, LocalMember, TransferStats};
use crate::clock::round_ms;
use crate::error::{human_bytes, Error, Result};
use crate::id::{between_open, between_open_closed, Id};
use crate::ring::NodeRef;
use crate::store::{self, BATCH_BYTES, BATCH_RECORDS};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, RwLock, RwLockReadGuard};

/// The hand-offs of one process.
#[derive(Default)]
pub(crate) struct Handoffs {
    /// Writes hold it shared from their ownership check to their commit; a
    /// hand-off takes it exclusively once, to wait out the writes that were
    /// admitted under the old ownership.
    barrier: RwLock<()>,
    state: Mutex<HandoffState>,
    /// Set when the process starts leaving: writes are refused from then on.
    leaving: AtomicBool,
}

#[derive(Default)]
pub(crate) struct HandoffState {
    /// Join hand-offs under way: by receiving member, the old owner.
    pub(crate) sources: BTreeMap<Id, NodeRef>,
    /// Where each newly joined member's arc starts, by member, until it
    /// learns its predecessor.
    join_arcs: BTreeMap<Id, Id>,
}

impl Handoffs {
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, HandoffState> {
        self.state.lock().expect("hand-off lock")
    }

    /// Held by a write from its ownership check to its commit.
    pub(crate) async fn admit_write(&self) -> RwLockReadGuard<'_, ()> {
        self.barrier.read().await
    }

    /// Waits until every write admitted so far has committed.
    async fn wait_out_writes(&self) {
        drop(self.barrier.write().await);
    }

    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    /// The old owner `member` is taking its arc over from, while it does.
    pub(crate) fn source(&self, member: Id) -> Option<NodeRef> {
        self.state().sources.get(&member).cloned()
    }

    pub(crate) fn join_arc(&self, member: Id) -> Option<Id> {
        self.state().join_arcs.get(&member).copied()
    }

    pub(crate) fn forget_join_arc(&self, member: Id) {
        self.state().join_arcs.remove(&member);
    }

    fn under_way(&self) -> usize {
        self.state().sources.len()
    }
}

impl DataNode {
    /// Join hand-offs under way on this process.
    pub fn hand_offs_pending(&self) -> usize {
        self.handoffs.under_way()
    }

    /// Records that local `member`, just joined before `successor` whose
    /// predecessor was `before`, must take the arc `(before, member]` over,
    /// and starts the transfer. A successor on this process shares the
    /// store already, unless its own hand-off is still under way: then the
    /// arc is still at that hand-off's source, and is fetched from there.
    pub fn take_over(
        self: &Arc<Self>,
        member: NodeRef,
        successor: NodeRef,
        before: Option<NodeRef>,
    ) {
        // The successor's predecessor is where our arc starts, if it lies
        // before us. (Our own id there is a restart the successor has not
        // noticed yet; one past us, a join that landed behind another.)
        let from = before
            .filter(|b| between_open(b.id, member.id, successor.id))
            .map(|b| b.id);
        if let Some(from) = from {
            self.handoffs.state().join_arcs.insert(member.id, from);
        }
        let successor = if successor.addr == self.addr {
            match self.handoffs.source(successor.id) {
                Some(source) => source,
                None => return,
            }
        } else {
            successor
        };
        let previous = self
            .handoffs
            .state()
            .sources
            .insert(member.id, successor.clone());
        if previous.is_some() {
            tracing::debug!(%member, "hand-off restarted");
        }
        let data = self.clone();
        self.spawn(async move {
            let outcome = data.run_take_over(&member, &successor, from).await;
            match outcome {
                Ok(stats) => tracing::info!(
                    %member, from = %successor,
                    "took over the arc: {} records, {} in {}",
                    stats.records,
                    human_bytes(stats.bytes),
                    humantime::format_duration(round_ms(stats.elapsed)),
                ),
                Err(error) => {
                    tracing::warn!(%member, from = %successor, "hand-off abandoned: {error}")
                }
            }
            let mut state = data.handoffs.state();
            if state.sources.get(&member.id) == Some(&successor) {
                state.sources.remove(&member.id);
            }
        });
    }

    async fn run_take_over(
        &self,
        member: &NodeRef,
        source: &NodeRef,
        from: Option<Id>,
    ) -> Result<TransferStats> {
        const MAX_REFUSALS: u32 = 240;
        const MAX_FAILURES: u32 = 6;
        const MAX_WAITS: u32 = 120;
        let mut stats = TransferStats::default();
        let mut after: Option<Vec<u8>> = None;
        let (mut refusals, mut failures, mut waits) = (0, 0, 0);
        let mut seen_joined = false;
        let mut members = self.members.clone();
        loop {
            // Unless the join said, the arc starts after this member's
            // predecessor, once known. (The notice that started this may
            // be ahead of the published membership: wait for it.)
            let from = loop {
                match self.member(member.id) {
                    Some(me) if me.joined => {
                        seen_joined = true;
                        if let Some(from) = from.or(me.predecessor.map(|p| p.id)) {
                            break from;
                        }
                    }
                    _ if seen_joined => {
                        return Err(Error::Unavailable("the member left the ring".into()))
                    }
                    _ => {}
                }
                waits += 1;
                if waits == MAX_WAITS {
                    return Err(Error::Unavailable(
                        "the member never came to know its predecessor".into(),
                    ));
                }
                let wait = tokio::time::timeout(self.config.rpc_timeout, members.changed());
                if let Ok(Err(_)) = wait.await {
                    return Err(Error::Unavailable("the node is stopping".into()));
                }
            };
            let began = self.clock.now();
            let fetched = self
                .fetch_arc(source, from, member.id, &mut after, &mut stats)
                .await;
            // Time spent streaming, not waiting to be allowed to.
            stats.elapsed += began.elapsed();
            match fetched {
                Ok(()) => return Ok(stats),
                Err(Error::NotReady(message)) => {
                    // The old owner has not yet seen us as its predecessor.
                    refusals += 1;
                    if refusals == MAX_REFUSALS {
                        return Err(Error::Unavailable(format!(
                            "{source} kept refusing: {message}"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => {
                    failures += 1;
                    tracing::debug!(%member, %source, "hand-off interrupted: {error}");
                    if failures == MAX_FAILURES {
                        return Err(Error::Unavailable(format!(
                            "{source} failed {MAX_FAILURES} times, last: {error}"
                        )));
                    }
                    tokio::time::sleep(self.config.rpc_timeout / 2 * failures).await;
                }
            }
        }
    }

    /// Streams `(from, to]` from `source` into the store, advancing `after`
    /// past every record applied so that a retry resumes there.
    async fn fetch_arc(
        &self,
        source: &NodeRef,
        from: Id,
        to: Id,
        after: &mut Option<Vec<u8>>,
        stats: &mut TransferStats,
    ) -> Result<()> {
        let mut stream = self.peers.fetch(source, from, to, after.clone()).await?;
        let mut next_report = self.clock.now() + Duration::from_secs(5);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            self.absorb(&batch)?;
            stats.count(&batch);
            if let Some(last) = batch.last() {
                *after = Some(last.key.clone());
            }
            if self.clock.now() >= next_report {
                tracing::info!(
                    member = %to, from = %source,
                    "hand-off in progress: {} records, {}",
                    stats.records,
                    human_bytes(stats.bytes)
                );
                next_report += Duration::from_secs(5);
            }
        }
        Ok(())
    }

    /// Serves a `Fetch` of `(from, to]` from local `member`: once the
    /// member no longer owns `to` (it has seen a predecessor at or past it)
    /// and has no hand-off of its own under way, and once the writes
    /// admitted under the old ownership have finished. `NotReady` before.
    /// Batches are read a few at a time ahead of the receiver: the
    /// stream's bound is the back-pressure.
    pub async fn serve_fetch(
        self: &Arc<Self>,
        member: Id,
        from: Id,
        to: Id,
        after: Option<Vec<u8>>,
    ) -> Result<BatchStream> {
        if self.is_stopping() {
            return Err(Error::Unavailable("this node is stopping".into()));
        }
        let Some(me) = self.member(member).filter(|m| m.joined) else {
            return Err(Error::NotReady(format!(
                "member {member} is not in the ring here"
            )));
        };
        let handed_over = me
            .predecessor
            .as_ref()
            .is_some_and(|p| !between_open_closed(p.id, to, member));
        if !handed_over {
            return Err(Error::NotReady(format!(
                "member {member} still owns {to}; notify it first"
            )));
        }
        if self.handoffs.source(member).is_some() {
            return Err(Error::NotReady(format!(
                "member {member} is still receiving its own arc"
            )));
        }
        self.handoffs.wait_out_writes().await;
        let after = after.map(|key| store::storage_key(&key));
        Ok(self.stream_arc(from, to, after))
    }

    /// Reads the arc `(from, to]` in batches, a few ahead of the reader
    /// (each read on a blocking thread when the store may wait on a disk).
    ///
    /// The stream ends cleanly only once the whole arc was sent: a reader
    /// takes a clean end for "complete". So the reading task is not
    /// cancelled when the node stops (shutdown waits for it, as it waits
    /// for the server to finish the stream); it ends when the arc is sent
    /// or the reader goes away.
    fn stream_arc(self: &Arc<Self>, from: Id, to: Id, mut after: Option<Vec<u8>>) -> BatchStream {
        let (batches, receiver) = mpsc::channel(4);
        let data = self.clone();
        self.tasks.spawn(async move {
            loop {
                let read = data
                    .store_work(move |data| {
                        let batch = data.next_batch(from, to, &mut after);
                        (batch, after)
                    })
                    .await;
                let batch = match read {
                    Ok((Ok(batch), next)) if !batch.is_empty() => {
                        after = next;
                        batch
                    }
                    Ok((Ok(_), _)) => return, // the whole arc was sent
                    Ok((Err(error), _)) | Err(error) => {
                        batches.send(Err(error)).await.ok();
                        return;
                    }
                };
                if batches.send(Ok(batch)).await.is_err() {
                    return; // the receiver went away
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }

    /// The next batch of the arc after `after`: at most [`BATCH_RECORDS`]
    /// records, cut once past [`BATCH_BYTES`].
    pub(crate) fn next_batch(
        &self,
        from: Id,
        to: Id,
        after: &mut Option<Vec<u8>>,
    ) -> Result<Vec<Entry>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < BATCH_RECORDS && bytes < BATCH_BYTES {
            let page = self
                .store
                .scan_arc(from, to, after.as_deref(), 64, self.wall_ms())
                .map_err(store_error)?;
            if page.is_empty() {
                break;
            }
            for (stored_key, record) in page {
                let key = store::split_storage_key(&stored_key)
                    .map(|(_, key)| key.to_vec())
                    .unwrap_or_default();
                bytes += key.len() + record.value.len() + 32;
                *after = Some(stored_key);
                batch.push(Entry { key, record });
                if batch.len() == BATCH_RECORDS || bytes >= BATCH_BYTES {
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// Refuses writes from now on, waits for those under way, and pushes
    /// each member's arc to its first successor on another process.
    pub async fn hand_off_on_leave(self: &Arc<Self>) {
        self.handoffs.leaving.store(true, Ordering::SeqCst);
        self.handoffs.wait_out_writes().await;
        let members: Vec<LocalMember> = self.joined_members();
        for member in members {
            let Some(target) = self.first_remote_successor(&member) else {
                tracing::warn!(member = %member.me, "no other process to hand the arc to; it stays in the data directory");
                continue;
            };
            // Without a known predecessor, everything here that might be
            // ours goes: extra records do no harm, missing ones would.
            let from = member.predecessor.as_ref().map_or(member.me.id, |p| p.id);
            let started = self.clock.now();
            let counted = Arc::new(Mutex::new(TransferStats::default()));
            let counter = counted.clone();
            let batches = self
                .stream_arc(from, member.me.id, None)
                .inspect(move |batch| {
                    if let Ok(batch) = batch {
                        counter.lock().expect("stats lock").count(batch);
                    }
                });
            match self.peers.absorb(&target, Box::pin(batches)).await {
                Ok(()) => {
                    let stats = *counted.lock().expect("stats lock");
                    tracing::info!(
                        member = %member.me, to = %target,
                        "handed the arc over: {} records, {} in {}",
                        stats.records,
                        human_bytes(stats.bytes),
                        humantime::format_duration(round_ms(started.elapsed()))
                    )
                }
                // Typical when a whole ring stops at once: the records stay
                // in this data directory and are served again on restart.
                Err(error) => tracing::warn!(
                    member = %member.me, to = %target,
                    "could not hand the arc over ({error}); its records stay in this node's data directory"
                ),
            }
        }
    }
}
