//! Anti-entropy on a running node: every member's arc compared with each
//! replica in turn (see [`crate::sync`] for the round itself), periodically,
//! soon after every membership change, and on demand (`chordal repair`).
//! Hints are delivered by the same background task.

use super::{wall_ms, Data, Entry, LocalMember};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ring::NodeRef;
use crate::sync::tree::NodePath;
use crate::sync::{respond, ArcRange, Session, Step, SyncError, SyncReply, SyncRequest, SyncStats};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long after a membership change the next round starts: long enough
/// for the ring to settle around it.
const AFTER_CHANGE: Duration = Duration::from_secs(2);
/// How often hints are offered to their targets.
const HINT_INTERVAL: Duration = Duration::from_secs(1);
/// The most members a walk back for the arcs copied here visits (many
/// virtual nodes of few processes make it long).
const MAX_WALK: usize = 256;
/// The most stray copies one pass hands back and drops.
const STRAY_PASS: u64 = 100_000;

/// How the last round of one (member, replica) pair went.
#[derive(Clone, Debug)]
pub(super) struct LastRound {
    /// The arc compared.
    pub arc: ArcRange,
    /// Wall-clock milliseconds when the round began.
    pub started_ms: u64,
    pub ended: Instant,
    pub stats: SyncStats,
    pub error: Option<String>,
}

/// One round: one member's arc, one replica.
#[derive(Clone, Debug)]
pub struct RoundReport {
    pub owner: NodeRef,
    pub arc: ArcRange,
    pub replica: NodeRef,
    pub stats: SyncStats,
    pub elapsed: Duration,
    /// Why the round ended early, if it did.
    pub error: Option<String>,
}

/// A replica of a member's arc and how the last round with it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaHealth {
    pub replica: NodeRef,
    pub last_round_ago: Option<Duration>,
    pub in_sync: bool,
    pub pushed: u64,
    pub pulled: u64,
    pub error: Option<String>,
}

impl Data {
    /// Runs the background work of replication until `stopping` is set:
    /// anti-entropy rounds (every `--anti-entropy-interval`, and
    /// [`AFTER_CHANGE`] after the local members' ring state changes;
    /// none when the interval is zero) and hint delivery.
    pub async fn run_maintenance(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        let hints = {
            let data = self.clone();
            let mut stopping = stopping.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(HINT_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stopping.changed() => return,
                        _ = tick.tick() => data.deliver_hints().await,
                    }
                }
            })
        };
        let interval = self.config.replication.anti_entropy_interval;
        if interval.is_zero() {
            // Rounds only on demand.
            stopping.changed().await.ok();
            hints.abort();
            return;
        }
        let mut members = self.members.clone();
        // The first round soon after start: a restarted node catches up,
        // on its own arcs and on the copies it keeps of others' (which
        // their owners' rounds would reach only when something changes
        // there or at their next interval).
        let mut next = tokio::time::Instant::now() + AFTER_CHANGE;
        let mut caught_up = false;
        // No membership change since the last round ended: copies held
        // beyond `N` are dropped only then.
        let mut settled = false;
        loop {
            tokio::select! {
                _ = stopping.changed() => break,
                changed = members.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    settled = false;
                    next = next.min(tokio::time::Instant::now() + AFTER_CHANGE);
                }
                _ = tokio::time::sleep_until(next) => {
                    let reports = self.anti_entropy_round().await;
                    log_round(&reports);
                    if !caught_up {
                        caught_up = self.catch_up_copies().await;
                    } else if settled && reports.iter().all(|r| r.error.is_none()) {
                        self.drop_all_stray_copies().await;
                    }
                    self.purge_tombstones().await;
                    settled = true;
                    // ±10%, so the processes of a ring do not run in step.
                    let factor = 0.9 + rand::random::<f64>() * 0.2;
                    next = tokio::time::Instant::now() + interval.mul_f64(factor);
                }
            }
        }
        hints.abort();
    }

    /// Compares every local member's arc with each of its replicas, one
    /// pair at a time, and repairs what differs.
    pub async fn anti_entropy_round(self: &Arc<Self>) -> Vec<RoundReport> {
        let members: Vec<LocalMember> = self.members.borrow().iter().cloned().collect();
        let mut reports = Vec::new();
        for member in members.into_iter().filter(|m| m.joined) {
            let Some(predecessor) = &member.predecessor else {
                continue;
            };
            let arc = ArcRange::new(predecessor.id, member.me.id);
            let preference = self.preference(&member).await;
            let replicas = preference
                .replicas(self.config.replication.replicas)
                .to_vec();
            for replica in replicas {
                let started = Instant::now();
                let started_ms = wall_ms();
                let (stats, error) = match self.sync_arc(arc, &replica, true).await {
                    Ok(stats) => (stats, None),
                    Err((stats, error)) => (stats, Some(error)),
                };
                self.metrics
                    .anti_entropy_bytes
                    .inc_by(stats.bytes_sent + stats.bytes_received);
                self.metrics
                    .anti_entropy_records
                    .inc_by(stats.pushed + stats.pulled);
                self.rounds.lock().expect("rounds lock").insert(
                    (member.me.id, replica.addr.clone()),
                    LastRound {
                        arc,
                        started_ms,
                        ended: Instant::now(),
                        stats,
                        error: error.clone(),
                    },
                );
                reports.push(RoundReport {
                    owner: member.me.clone(),
                    arc,
                    replica,
                    stats,
                    elapsed: started.elapsed(),
                    error,
                });
            }
        }
        reports
    }

    /// The arcs of other processes' members that this process keeps copies
    /// of, each with its owner: found by walking back from every local
    /// member through predecessors ([`crate::replica::copied_here`]).
    /// `None` when a walk could not be completed (no member joined yet, a
    /// member without a predecessor yet, or one that did not answer).
    pub async fn copied_arcs(&self) -> Option<Vec<(NodeRef, ArcRange)>> {
        let replicas = self.config.replication.replicas;
        let members: Vec<LocalMember> = self.members.borrow().iter().cloned().collect();
        if !members.iter().any(|m| m.joined) {
            return None;
        }
        let mut arcs = Vec::new();
        for member in members.iter().filter(|m| m.joined) {
            // (member, its predecessor) going back round the ring.
            let mut walk: Vec<(NodeRef, NodeRef)> = Vec::new();
            let mut at = member.predecessor.clone()?;
            while walk.len() < MAX_WALK {
                let copied: Vec<NodeRef> = walk
                    .iter()
                    .map(|(m, _)| m.clone())
                    .chain([at.clone()])
                    .collect();
                if crate::replica::copied_here(&self.addr, &copied, replicas) < copied.len() {
                    break;
                }
                let (predecessor, _) = self.peers.state(&at).await.ok()?;
                let predecessor = predecessor?;
                walk.push((at, predecessor.clone()));
                at = predecessor;
            }
            arcs.extend(walk.into_iter().map(|(owner, predecessor)| {
                (owner.clone(), ArcRange::new(predecessor.id, owner.id))
            }));
        }
        Some(arcs)
    }

    /// Runs a round, driven from here, of every arc this process keeps a
    /// copy of with that arc's owner; true when every round succeeded.
    pub async fn catch_up_copies(self: &Arc<Self>) -> bool {
        let Some(arcs) = self.copied_arcs().await else {
            return false;
        };
        let mut total = SyncStats::default();
        let mut failed = 0;
        for (owner, arc) in &arcs {
            match self.sync_arc(*arc, owner, false).await {
                Ok(stats) => total.add(&stats),
                Err((stats, error)) => {
                    total.add(&stats);
                    failed += 1;
                    tracing::debug!(%owner, "catch-up round failed: {error}");
                }
            }
        }
        if !total.in_sync() || failed > 0 {
            tracing::info!(
                "anti-entropy catch-up: {} arcs copied here ({failed} failed), {} records received from their owners, {} sent",
                arcs.len(),
                total.pulled,
                total.pushed
            );
        }
        failed == 0
    }

    /// Purges the expired tombstones of every local member's arc that every
    /// replica of the arc holds: those that expired before the last round
    /// with each replica began, that round having completed. Each replica
    /// is told to forget them first (one that does not answer keeps its
    /// expired copy, which does no harm: a round never sends an expired
    /// record to a process that lacks the key). Returns how many.
    pub async fn purge_tombstones(self: &Arc<Self>) -> u64 {
        let replicas = self.config.replication.replicas;
        let members: Vec<LocalMember> = self.members.borrow().iter().cloned().collect();
        let mut purged = 0;
        for member in members.iter().filter(|m| m.joined) {
            let Some(predecessor) = &member.predecessor else {
                continue;
            };
            let arc = ArcRange::new(predecessor.id, member.me.id);
            let preference = self.preference(member).await;
            let holders = preference.replicas(replicas).to_vec();
            // The earliest start among the last complete rounds with every
            // replica; none if one has not completed a round of this arc.
            let cutoff = {
                let rounds = self.rounds.lock().expect("rounds lock");
                holders.iter().try_fold(wall_ms(), |cutoff, replica| {
                    rounds
                        .get(&(member.me.id, replica.addr.clone()))
                        .filter(|last| last.arc == arc && last.error.is_none())
                        .map(|last| cutoff.min(last.started_ms))
                })
            };
            let Some(cutoff) = cutoff else {
                continue;
            };
            while purged < STRAY_PASS {
                let expired = match self
                    .store
                    .expired_tombstones(arc, cutoff, super::BATCH_RECORDS)
                {
                    Ok(expired) if !expired.is_empty() => expired,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!("cannot read expired tombstones: {error}");
                        break;
                    }
                };
                for replica in &holders {
                    if let Err(status) = self.peers.forget(replica, &expired).await {
                        tracing::debug!(%replica, "could not tell it to forget purged tombstones: {}", status.message());
                    }
                }
                match self.forget_tombstones(&expired) {
                    Ok(0) => break,
                    Ok(forgotten) => purged += forgotten,
                    Err(error) => {
                        tracing::warn!("purging tombstones failed: {error}");
                        break;
                    }
                }
            }
        }
        if purged > 0 {
            tracing::debug!("purged {purged} tombstones every replica held");
        }
        purged
    }

    /// Deletes the copies held here of `tombstones`, each only if it is that
    /// very tombstone. Returns how many were deleted.
    pub fn forget_tombstones(&self, tombstones: &[Entry]) -> Result<u64> {
        let mut forgotten = 0;
        for entry in tombstones {
            if self
                .store
                .forget_tombstone(&entry.key, entry.record.version)
                .map_err(super::store_error)?
            {
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// [`Data::drop_stray_copies`] with the arcs copied here as they are
    /// now, logged.
    async fn drop_all_stray_copies(self: &Arc<Self>) {
        let Some(copied) = self.copied_arcs().await else {
            return;
        };
        match self.drop_stray_copies(&copied).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(
                "dropped {dropped} copies held beyond the {} replicas of their keys, after their owners took them",
                self.config.replication.replicas
            ),
            Err(error) => tracing::debug!("dropping copies held beyond N stopped: {error}"),
        }
    }

    /// Hands the records held here outside every arc this process owns or
    /// copies (`copied`, from [`Data::copied_arcs`]) to their owners, and
    /// deletes each here once its owner has taken it: the copies a join, a
    /// leave or a changed preference list left beyond `N`. Does nothing
    /// while a local member is joining or still receiving its arc, or has
    /// no predecessor. Returns how many records were dropped.
    pub async fn drop_stray_copies(
        self: &Arc<Self>,
        copied: &[(NodeRef, ArcRange)],
    ) -> std::result::Result<u64, String> {
        let members: Vec<LocalMember> = self.members.borrow().iter().cloned().collect();
        let mut held: Vec<ArcRange> = copied.iter().map(|(_, arc)| *arc).collect();
        for member in &members {
            let Some(predecessor) = member.predecessor.as_ref().filter(|_| member.joined) else {
                return Ok(0);
            };
            if self.pending_source(member.me.id).is_some() {
                return Ok(0);
            }
            held.push(ArcRange::new(predecessor.id, member.me.id));
        }
        if members.is_empty() {
            return Ok(0);
        }
        let mut dropped = 0;
        for gap in ArcRange::gaps(&held) {
            if !matches!(self.store.summarize(gap, NodePath::ROOT), Ok(s) if s.count > 0) {
                continue;
            }
            // Expired tombstones are never handed over (a round does not
            // copy them either); outside the arcs held here they shadow
            // nothing this process could send, so they simply go.
            let expired = self
                .store
                .expired_tombstones(gap, wall_ms(), STRAY_PASS as usize)
                .map_err(|e| e.to_string())?;
            dropped += self
                .forget_tombstones(&expired)
                .map_err(|e| e.to_string())?;
            let mut after = None;
            // The owner of the last record looked up, and its arc.
            let mut known: Option<(NodeRef, ArcRange)> = None;
            while dropped < STRAY_PASS {
                let data = self.clone();
                let (batch, next) = tokio::task::spawn_blocking(move || {
                    let batch = data.next_batch(gap.from, gap.to, &mut after);
                    (batch, after)
                })
                .await
                .map_err(|e| e.to_string())?;
                after = next;
                let batch = batch.map_err(|e| e.to_string())?;
                if batch.is_empty() {
                    break;
                }
                // Runs of consecutive records with one owner.
                let mut run: Vec<Entry> = Vec::new();
                for entry in batch {
                    let id = Id::of_key(&entry.key);
                    if !known.as_ref().is_some_and(|(_, arc)| arc.contains(id)) {
                        if let Some((owner, _)) = &known {
                            dropped += self.hand_back(owner, std::mem::take(&mut run)).await?;
                        }
                        let outcome = self.router.lookup(id).await.map_err(|e| e.to_string())?;
                        let owner = outcome
                            .successors
                            .first()
                            .cloned()
                            .ok_or("a lookup named no owner")?;
                        known = Some((
                            owner.clone(),
                            ArcRange::new(outcome.predecessor.id, owner.id),
                        ));
                    }
                    run.push(entry);
                }
                if let Some((owner, _)) = &known {
                    dropped += self.hand_back(owner, run).await?;
                }
            }
        }
        Ok(dropped)
    }

    /// Sends `entries` to `owner`, then deletes each here unless it changed
    /// since. Keeps them when the owner is on this process (the ring has
    /// moved since the arcs were worked out).
    async fn hand_back(
        &self,
        owner: &NodeRef,
        entries: Vec<Entry>,
    ) -> std::result::Result<u64, String> {
        if entries.is_empty() || owner.addr == self.addr {
            return Ok(0);
        }
        self.copy_to(owner, &entries, None)
            .await
            .map_err(|e| format!("{owner}: {e}"))?;
        let mut dropped = 0;
        for entry in entries {
            if self
                .store
                .remove_version(&entry.key, entry.record.version)
                .map_err(|e| e.to_string())?
            {
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// One round of `arc` with `replica`, driven from here. On failure, what
    /// was done before it and why it stopped. `as_owner`: driven by the
    /// arc's owner, which may then have the replica forget expired
    /// tombstones the owner no longer holds.
    pub async fn sync_arc(
        self: &Arc<Self>,
        arc: ArcRange,
        replica: &NodeRef,
        as_owner: bool,
    ) -> std::result::Result<SyncStats, (SyncStats, String)> {
        let mut session = Session::new(arc, wall_ms());
        loop {
            let (returned, step) = self
                .with_store(session, |data, session| session.next(&data.store))
                .await;
            session = returned;
            let request = match step {
                Ok(Step::Done) => {
                    // The owner purged these (a replica's round cannot
                    // tell a purged tombstone from one never received).
                    let expired = session.take_expired_there();
                    if as_owner && !expired.is_empty() {
                        if let Err(status) = self.peers.forget(replica, &expired).await {
                            tracing::debug!(%replica, "could not tell it to forget purged tombstones: {}", status.message());
                        }
                    }
                    return Ok(session.stats());
                }
                Ok(Step::Send(request)) => request,
                Err(error) => return Err((session.stats(), error.to_string())),
            };
            let reply = match self.peers.sync(replica, arc, request).await {
                Ok((reply, sent, received)) => {
                    session.count_bytes(sent, received);
                    reply
                }
                Err(status) => return Err((session.stats(), status.message().to_string())),
            };
            let (returned, outcome) = self
                .with_store(session, move |data, session| {
                    session.on_reply(&data.store, reply)
                })
                .await;
            session = returned;
            if let Err(error) = outcome {
                return Err((session.stats(), error.to_string()));
            }
        }
    }

    /// Runs `work` on a blocking thread: the store is read and written in
    /// pages that may take a while.
    async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        mut session: Session,
        work: impl FnOnce(&Data, &mut Session) -> T + Send + 'static,
    ) -> (Session, T) {
        let data = self.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = work(&data, &mut session);
            (session, outcome)
        })
        .await
        .expect("store work does not panic")
    }

    /// Whether a complete round of `owner`'s arc as it is now has
    /// succeeded with `replica`: then its copy of the arc missed at most
    /// what was written since.
    pub(super) fn caught_up(&self, owner: &LocalMember, replica: &NodeRef) -> bool {
        let Some(predecessor) = &owner.predecessor else {
            return false;
        };
        let arc = ArcRange::new(predecessor.id, owner.me.id);
        self.rounds
            .lock()
            .expect("rounds lock")
            .get(&(owner.me.id, replica.addr.clone()))
            .is_some_and(|last| last.arc == arc && last.error.is_none())
    }

    /// Answers one step of a round another process drives.
    pub async fn serve_sync(self: &Arc<Self>, request: SyncRequest) -> Result<SyncReply> {
        let data = self.clone();
        let reply = tokio::task::spawn_blocking(move || respond(&data.store, request))
            .await
            .map_err(|e| Error::Unavailable(format!("sync step failed: {e}")))?;
        match reply {
            Ok(reply) => Ok(reply),
            Err(SyncError::Store(error)) => Err(super::store_error(error)),
            Err(error) => Err(Error::InvalidArgument(error.to_string())),
        }
    }

    /// Records held in `member`'s arc, and the health of its replicas as
    /// the last rounds found it (from what is known without asking anyone).
    pub fn replication_health(&self, member: Id) -> (u64, Vec<ReplicaHealth>) {
        let Some(member) = self.member(member).filter(|m| m.joined) else {
            return (0, Vec::new());
        };
        let owned = member.predecessor.as_ref().map_or(0, |p| {
            self.store
                .summarize(ArcRange::new(p.id, member.me.id), NodePath::ROOT)
                .map(|summary| summary.count)
                .unwrap_or(0)
        });
        let replicas = self.config.replication.replicas;
        let preference = self.cached_preference(&member, false).unwrap_or_else(|| {
            crate::replica::preference_from(&member.me, &member.successors, replicas)
        });
        let rounds = self.rounds.lock().expect("rounds lock");
        let health = preference
            .replicas(replicas)
            .iter()
            .map(|replica| {
                let last = rounds.get(&(member.me.id, replica.addr.clone()));
                ReplicaHealth {
                    replica: replica.clone(),
                    last_round_ago: last.map(|l| l.ended.elapsed()),
                    in_sync: last.is_some_and(|l| l.error.is_none() && l.stats.in_sync()),
                    pushed: last.map_or(0, |l| l.stats.pushed),
                    pulled: last.map_or(0, |l| l.stats.pulled),
                    error: last.and_then(|l| l.error.clone()),
                }
            })
            .collect();
        (owned, health)
    }
}

impl Data {
    /// Adds what the data layer knows to a process's `Describe`: records
    /// held, hints, and per member its records and replicas' health.
    pub fn describe_replication(&self, info: &mut crate::rpc::ProcessInfo) {
        info.records = self.store.tree().root().count;
        info.hints = self.hints_held();
        let replication = &self.config.replication;
        info.replicas = replication.replicas as u32;
        info.write_quorum = replication.write_quorum as u32;
        info.read_quorum = replication.read_quorum as u32;
        for member in &mut info.members {
            let (owned, replicas) = self.replication_health(member.me.id);
            member.owned_records = owned;
            member.replicas = replicas;
        }
    }
}

fn log_round(reports: &[RoundReport]) {
    let mut total = SyncStats::default();
    for report in reports {
        total.add(&report.stats);
        if let Some(error) = &report.error {
            tracing::debug!(owner = %report.owner, replica = %report.replica, "anti-entropy round failed: {error}");
        }
    }
    let failed = reports.iter().filter(|r| r.error.is_some()).count();
    if total.in_sync() && failed == 0 {
        tracing::debug!("anti-entropy: {} arcs in sync", reports.len());
    } else {
        tracing::info!(
            "anti-entropy: {} rounds ({failed} failed), {} records pushed, {} pulled, {} sent",
            reports.len(),
            total.pushed,
            total.pulled,
            super::human_bytes(total.bytes_sent + total.bytes_received)
        );
    }
}
