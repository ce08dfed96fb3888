//! The simulated network and ring: who is up, who sees whom, what each
//! process's ring task last published; lookups answered from that view
//! ([`SimRouter`]) and calls carried with delay, loss and cuts
//! ([`SimPeers`]).

use super::DataSimStats;
use crate::data::{
    BatchStream, DataNode, LocalMember, Peers, ReadAnswer, Router, SyncExchange, WriteAnswer,
    WriteOp,
};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ring::{LookupOutcome, NodeRef};
use crate::store::Entry;
use crate::sync::{ArcRange, SyncRequest};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The network and the ring every process sees.
pub(super) struct Net {
    pub(super) rng: StdRng,
    pub(super) loss: f64,
    /// Processes that answer.
    pub(super) up: BTreeSet<String>,
    /// Processes in the ring (up and joined), as the ring would know them.
    pub(super) members: BTreeMap<String, Vec<Id>>,
    /// Processes that joined but that the rest of the ring has not seen yet.
    pub(super) joining: BTreeSet<String>,
    /// Each process's side of the partition, if the network is split.
    pub(super) sides: BTreeMap<String, usize>,
    pub(super) nodes: BTreeMap<String, Arc<DataNode>>,
    /// What each process last published of its members.
    pub(super) published: BTreeMap<String, Vec<LocalMember>>,
    pub(super) stats: DataSimStats,
    /// Each anti-entropy request: when it was sent, by whom, to whom, of
    /// which arc.
    pub(super) syncs: Vec<(tokio::time::Instant, String, String, ArcRange)>,
}

impl Net {
    fn same_side(&self, a: &str, b: &str) -> bool {
        self.sides.get(a) == self.sides.get(b)
    }

    /// The members `viewer` sees in ring order: those of processes up, in
    /// the ring and on its side, and its own.
    pub(super) fn ring_seen_by(&self, viewer: &str) -> Vec<NodeRef> {
        let mut ring: Vec<NodeRef> = self
            .members
            .iter()
            .filter(|(addr, _)| {
                self.up.contains(*addr)
                    && self.same_side(viewer, addr)
                    && (!self.joining.contains(*addr) || *addr == viewer)
            })
            .flat_map(|(addr, ids)| ids.iter().map(|id| NodeRef::new(*id, addr.clone())))
            .collect();
        ring.sort_by_key(|m| m.id);
        ring
    }
}

/// Where on `ring` (members in id order) the owner of `id` is: the first
/// member at or after it, round to the start.
pub(super) fn owner_index(ring: &[NodeRef], id: Id) -> usize {
    ring.iter().position(|m| m.id >= id).unwrap_or(0)
}

/// Lookups answered from the ring `from` sees.
pub(super) struct SimRouter {
    pub(super) from: String,
    pub(super) net: Arc<Mutex<Net>>,
    pub(super) successors: usize,
}

#[async_trait::async_trait]
impl Router for SimRouter {
    async fn lookup(&self, target: Id) -> Result<LookupOutcome> {
        let net = self.net.lock().expect("sim lock");
        let ring = net.ring_seen_by(&self.from);
        if ring.is_empty() {
            return Err(Error::Unavailable("no ring".into()));
        }
        let at = owner_index(&ring, target);
        let predecessor = ring[(at + ring.len() - 1) % ring.len()].clone();
        let successors = (0..self.successors.min(ring.len()))
            .map(|k| ring[(at + k) % ring.len()].clone())
            .collect();
        Ok(LookupOutcome {
            target,
            predecessor,
            successors,
            path: Vec::new(),
        })
    }
}

/// One process's calls to the others, over the simulated network.
pub(super) struct SimPeers {
    pub(super) from: String,
    pub(super) net: Arc<Mutex<Net>>,
    pub(super) min_delay_ms: u64,
    pub(super) max_delay_ms: u64,
    pub(super) timeout: Duration,
}

impl SimPeers {
    /// One message's trip from `from` to `to`: a delay, then whether it
    /// arrived (both ends up, on one side of any partition, not lost).
    async fn trip(&self, from: &str, to: &str) -> bool {
        let (delay, arrives) = {
            let mut net = self.net.lock().expect("sim lock");
            let delay = net.rng.random_range(self.min_delay_ms..=self.max_delay_ms);
            let loss = net.loss;
            let lost = loss > 0.0 && net.rng.random_bool(loss);
            let arrives =
                !lost && net.up.contains(from) && net.up.contains(to) && net.same_side(from, to);
            net.stats.messages += 1;
            net.stats.messages_lost += u64::from(!arrives);
            (delay, arrives)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        arrives
    }

    /// Runs `call` on `to`'s data layer as a request and its answer would:
    /// a lost request or answer is a timeout; a crashed or cut-off process
    /// never answers; a handler is dropped when its process crashes or the
    /// caller's deadline passes (as a server drops a cancelled stream).
    async fn call<T, F, Fut>(&self, to: &str, call: F) -> Result<T>
    where
        F: FnOnce(Arc<DataNode>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let no_answer = || async move {
            tokio::time::sleep_until(deadline).await;
            Err(Error::Unavailable("no answer in time".into()))
        };
        if !self.trip(&self.from, to).await {
            return no_answer().await;
        }
        let node = self.net.lock().expect("sim lock").nodes[to].clone();
        if node.is_stopping() {
            return no_answer().await;
        }
        let handled = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                biased;
                _ = node.stopped() => None,
                answer = call(node.clone()) => Some(answer),
            }
        });
        let answer = match handled.await {
            Ok(Some(answer)) => answer,
            Ok(None) => return no_answer().await,
            Err(_) => return Err(Error::Unavailable("no answer in time".into())),
        };
        if !self.trip(to, &self.from).await || tokio::time::Instant::now() > deadline {
            return no_answer().await;
        }
        answer
    }

    /// A stream from `source` ends with an error, as a broken connection
    /// does, once `source` is down or cut off from this process.
    fn while_reachable(&self, source: &str, batches: BatchStream) -> BatchStream {
        let (net, from, source) = (self.net.clone(), self.from.clone(), source.to_string());
        let reachable = move || {
            let net = net.lock().expect("sim lock");
            net.up.contains(&source) && net.up.contains(&from) && net.same_side(&from, &source)
        };
        Box::pin(futures::stream::unfold(Some(batches), move |batches| {
            let reachable = reachable.clone();
            async move {
                let mut batches = batches?;
                if !reachable() {
                    let broken = Err(Error::Unavailable("the connection broke".into()));
                    return Some((broken, None));
                }
                let batch = futures::StreamExt::next(&mut batches).await?;
                Some((batch, Some(batches)))
            }
        }))
    }
}

#[async_trait::async_trait]
impl Peers for SimPeers {
    async fn write(&self, to: &NodeRef, op: &WriteOp) -> Result<WriteAnswer> {
        let (member, op) = (to.id, op.clone());
        self.call(&to.addr, |node| async move {
            node.serve_write(member, op).await
        })
        .await
    }

    async fn read(
        &self,
        to: &NodeRef,
        key: &[u8],
        raw: bool,
        read_quorum: u32,
    ) -> Result<ReadAnswer> {
        let (member, key) = (to.id, key.to_vec());
        self.call(&to.addr, |node| async move {
            node.serve_read(member, &key, raw, read_quorum).await
        })
        .await
    }

    async fn replicate(
        &self,
        to: &NodeRef,
        entries: &[Entry],
        hint_for: Option<&NodeRef>,
    ) -> Result<u64> {
        let (entries, hint_for) = (entries.to_vec(), hint_for.cloned());
        self.call(&to.addr, |node| async move {
            node.serve_replicate(&entries, hint_for.as_ref())
        })
        .await
    }

    async fn forget(&self, to: &NodeRef, tombstones: &[Entry]) -> Result<u64> {
        let tombstones = tombstones.to_vec();
        self.call(
            &to.addr,
            |node| async move { node.serve_forget(&tombstones) },
        )
        .await
    }

    async fn sync(
        &self,
        to: &NodeRef,
        arc: ArcRange,
        request: SyncRequest,
    ) -> Result<SyncExchange> {
        self.net.lock().expect("sim lock").syncs.push((
            tokio::time::Instant::now(),
            self.from.clone(),
            to.addr.clone(),
            arc,
        ));
        self.call(&to.addr, |node| async move {
            Ok(SyncExchange {
                reply: node.serve_sync(request).await?,
                // Nothing is encoded here; byte counts are the gRPC edge's.
                bytes_sent: 0,
                bytes_received: 0,
            })
        })
        .await
    }

    async fn state(&self, of: &NodeRef) -> Result<(Option<NodeRef>, Vec<NodeRef>)> {
        self.net.lock().expect("sim lock").stats.state_calls += 1;
        let (net, of) = (self.net.clone(), of.clone());
        self.call(&of.addr.clone(), |_| async move {
            let net = net.lock().expect("sim lock");
            net.published
                .get(&of.addr)
                .and_then(|members| members.iter().find(|m| m.me.id == of.id))
                .map(|m| (m.predecessor.clone(), m.successors.clone()))
                .ok_or_else(|| Error::Unavailable(format!("{of} is not a member")))
        })
        .await
    }

    async fn fetch(
        &self,
        source: &NodeRef,
        from: Id,
        to: Id,
        after: Option<Vec<u8>>,
    ) -> Result<BatchStream> {
        let member = source.id;
        let batches = self
            .call(&source.addr, |node| async move {
                node.serve_fetch(member, from, to, after).await
            })
            .await?;
        Ok(self.while_reachable(&source.addr, batches))
    }

    async fn absorb(&self, target: &NodeRef, batches: BatchStream) -> Result<()> {
        // A stream's batches travel together; the call is one trip each way.
        self.call(&target.addr, |node| async move {
            node.serve_absorb(batches).await.map(drop)
        })
        .await
    }
}
