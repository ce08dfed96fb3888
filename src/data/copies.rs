//! The copies a process keeps of other processes' arcs, over time: caught
//! up with their owners after a restart, handed back and dropped when held
//! beyond `N` (after joins, leaves and changed preference lists), and
//! tombstones purged once every replica holds them.

use super::{store_error, DataNode, Entry, LocalMember};
use crate::error::Result;
use crate::id::Id;
use crate::ring::NodeRef;
use crate::store::digest::NodePath;
use crate::store::BATCH_RECORDS;
use crate::sync::{ArcRange, SyncStats};
use std::sync::Arc;

/// The most members a walk back for the arcs copied here visits (many
/// virtual nodes of few processes make it long).
const MAX_WALK: usize = 256;
/// The most stray copies one pass hands back and drops.
const STRAY_PASS: u64 = 100_000;

impl DataNode {
    /// The arcs of other processes' members that this process keeps copies
    /// of, each with its owner: found by walking back from every local
    /// member through predecessors ([`crate::replica::copied_here`]).
    /// `None` when a walk could not be completed (no member joined yet, a
    /// member without a predecessor yet, or one that did not answer).
    pub async fn copied_arcs(&self) -> Option<Vec<(NodeRef, ArcRange)>> {
        let replicas = self.config.replication.replicas;
        let members = self.joined_members();
        if members.is_empty() {
            return None;
        }
        let mut arcs = Vec::new();
        for member in &members {
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
        let mut purged = 0;
        for member in self.joined_members() {
            let Some(predecessor) = &member.predecessor else {
                continue;
            };
            let arc = ArcRange::new(predecessor.id, member.me.id);
            let preference = self.preference(&member).await;
            let holders = preference.replicas(replicas).to_vec();
            // The earliest start among the last complete rounds with every
            // replica; none if one has not completed a round of this arc.
            let cutoff = holders.iter().try_fold(self.wall_ms(), |cutoff, replica| {
                self.rounds
                    .get(member.me.id, &replica.addr)
                    .filter(|last| last.arc == arc && last.error.is_none())
                    .map(|last| cutoff.min(last.started_ms))
            });
            let Some(cutoff) = cutoff else {
                continue;
            };
            while purged < STRAY_PASS {
                let expired = match self.store.expired_tombstones(arc, cutoff, BATCH_RECORDS) {
                    Ok(expired) if !expired.is_empty() => expired,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!("cannot read expired tombstones: {error}");
                        break;
                    }
                };
                for replica in &holders {
                    if let Err(error) = self.peers.forget(replica, &expired).await {
                        tracing::debug!(%replica, "could not tell it to forget purged tombstones: {error}");
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
                .map_err(store_error)?
            {
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// [`DataNode::drop_stray_copies`] with the arcs copied here as they
    /// are now, logged.
    pub(super) async fn drop_all_stray_copies(self: &Arc<Self>) {
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
    /// copies (`copied`, from [`DataNode::copied_arcs`]) to their owners,
    /// and deletes each here once its owner has taken it: the copies a
    /// join, a leave or a changed preference list left beyond `N`. Does
    /// nothing while a local member is joining or still receiving its arc,
    /// or has no predecessor. Returns how many records were dropped.
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
            if self.handoffs.source(member.me.id).is_some() {
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
                .expired_tombstones(gap, self.wall_ms(), STRAY_PASS as usize)
                .map_err(|e| e.to_string())?;
            dropped += self
                .forget_tombstones(&expired)
                .map_err(|e| e.to_string())?;
            let mut after = None;
            // The owner of the last record looked up, and its arc.
            let mut known: Option<(NodeRef, ArcRange)> = None;
            while dropped < STRAY_PASS {
                let (batch, next) = self
                    .store_work(move |data| {
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
}
