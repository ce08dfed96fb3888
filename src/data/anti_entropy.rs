//! Anti-entropy on a running node: every member's arc compared with each
//! replica in turn (see [`crate::sync`] for the round itself), periodically,
//! soon after every membership change, and on demand (`chordal repair`).
//! The same background task delivers hints, catches a restarted process
//! up, hands back copies held beyond `N` and purges tombstones every
//! replica holds ([`super::copies`]).

use super::{store_error, DataNode, LocalMember};
use crate::error::{human_bytes, Error, Result};
use crate::id::Id;
use crate::ring::NodeRef;
use crate::sync::{respond, ArcRange, Session, Step, SyncError, SyncReply, SyncRequest, SyncStats};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long after a membership change the next round starts: long enough
/// for the ring to settle around it.
const AFTER_CHANGE: Duration = Duration::from_secs(2);
/// How often hints are offered to their targets.
const HINT_INTERVAL: Duration = Duration::from_secs(1);

/// How the last round of each (member, replica address) pair went.
#[derive(Default)]
pub(crate) struct Rounds {
    last: Mutex<BTreeMap<(Id, String), LastRound>>,
}

/// How the last round of one (member, replica) pair went.
#[derive(Clone, Debug)]
pub(crate) struct LastRound {
    /// The arc compared.
    pub arc: ArcRange,
    /// Wall-clock milliseconds when the round began.
    pub started_ms: u64,
    pub ended: Instant,
    pub stats: SyncStats,
    pub error: Option<String>,
}

impl Rounds {
    pub(crate) fn get(&self, member: Id, replica: &str) -> Option<LastRound> {
        self.last
            .lock()
            .expect("rounds lock")
            .get(&(member, replica.to_string()))
            .cloned()
    }

    fn record(&self, member: Id, replica: &str, round: LastRound) {
        self.last
            .lock()
            .expect("rounds lock")
            .insert((member, replica.to_string()), round);
    }
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

impl DataNode {
    /// Starts the background work of replication, which runs until the
    /// node stops: anti-entropy rounds (every `--anti-entropy-interval`,
    /// and `AFTER_CHANGE` after the local members' ring state changes;
    /// none when the interval is zero) and hint delivery.
    pub fn start_maintenance(self: &Arc<Self>) {
        let data = self.clone();
        self.spawn(async move {
            let mut tick = tokio::time::interval(HINT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                data.deliver_hints().await;
            }
        });
        if !self.config.replication.anti_entropy_interval.is_zero() {
            let data = self.clone();
            self.spawn(async move { data.run_rounds().await });
        }
    }

    async fn run_rounds(self: Arc<Self>) {
        let interval = self.config.replication.anti_entropy_interval;
        let mut members = self.members.clone();
        // The first round soon after start: a restarted node catches up,
        // on its own arcs and on the copies it keeps of others' (which
        // their owners' rounds would reach only when something changes
        // there or at their next interval).
        let mut next = self.clock.now() + AFTER_CHANGE;
        let mut caught_up = false;
        // No membership change since the last round ended: copies held
        // beyond `N` are dropped only then.
        let mut settled = false;
        loop {
            // In a fixed order: the simulator replays a seed exactly.
            tokio::select! {
                biased;
                changed = members.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    settled = false;
                    next = next.min(self.clock.now() + AFTER_CHANGE);
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
                    next = self.clock.now() + interval.mul_f64(self.jitter(0.1));
                }
            }
        }
    }

    /// Compares every local member's arc with each of its replicas, one
    /// pair at a time, and repairs what differs.
    pub async fn anti_entropy_round(self: &Arc<Self>) -> Vec<RoundReport> {
        let mut reports = Vec::new();
        for member in self.joined_members() {
            let Some(predecessor) = &member.predecessor else {
                continue;
            };
            let arc = ArcRange::new(predecessor.id, member.me.id);
            let preference = self.preference(&member).await;
            let replicas = preference
                .replicas(self.config.replication.replicas)
                .to_vec();
            for replica in replicas {
                let started = self.clock.now();
                let started_ms = self.wall_ms();
                let (stats, error) = match self.sync_arc(arc, &replica, true).await {
                    Ok(stats) => (stats, None),
                    Err((stats, error)) => (stats, Some(error)),
                };
                self.stats
                    .anti_entropy_bytes
                    .inc_by(stats.bytes_sent + stats.bytes_received);
                self.stats
                    .anti_entropy_records
                    .inc_by(stats.pushed + stats.pulled);
                self.rounds.record(
                    member.me.id,
                    &replica.addr,
                    LastRound {
                        arc,
                        started_ms,
                        ended: self.clock.now(),
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
        let mut session = Session::new(arc, self.wall_ms());
        loop {
            let (returned, step) = self
                .with_session(session, |data, session| session.next(&data.store))
                .await;
            session = returned;
            let request = match step {
                Ok(Step::Done) => {
                    // The owner purged these (a replica's round cannot
                    // tell a purged tombstone from one never received).
                    let expired = session.take_expired_there();
                    if as_owner && !expired.is_empty() {
                        if let Err(error) = self.peers.forget(replica, &expired).await {
                            tracing::debug!(%replica, "could not tell it to forget purged tombstones: {error}");
                        }
                    }
                    return Ok(session.stats());
                }
                Ok(Step::Send(request)) => request,
                Err(error) => return Err((session.stats(), error.to_string())),
            };
            let reply = match self.peers.sync(replica, arc, request).await {
                Ok(exchange) => {
                    session.count_bytes(exchange.bytes_sent, exchange.bytes_received);
                    exchange.reply
                }
                Err(error) => return Err((session.stats(), error.message())),
            };
            let (returned, outcome) = self
                .with_session(session, move |data, session| {
                    session.on_reply(&data.store, reply)
                })
                .await;
            session = returned;
            if let Err(error) = outcome {
                return Err((session.stats(), error.to_string()));
            }
        }
    }

    /// Runs one step of `session` on the store (see
    /// [`DataNode::store_work`]): a step reads and writes pages that may
    /// take a while.
    async fn with_session<T: Send + 'static>(
        self: &Arc<Self>,
        mut session: Session,
        work: impl FnOnce(&DataNode, &mut Session) -> T + Send + 'static,
    ) -> (Session, T) {
        let arc = session.arc();
        let outcome = self
            .store_work(move |data| {
                let outcome = work(data, &mut session);
                (session, outcome)
            })
            .await;
        match outcome {
            Ok(done) => done,
            // The work itself panicked: a bug, reported as this round's end.
            Err(error) => panic!("a sync step of {arc:?} failed: {error}"),
        }
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
            .get(owner.me.id, &replica.addr)
            .is_some_and(|last| last.arc == arc && last.error.is_none())
    }

    /// Answers one step of a round another process drives.
    pub async fn serve_sync(self: &Arc<Self>, request: SyncRequest) -> Result<SyncReply> {
        let reply = self
            .store_work(move |data| respond(&data.store, request))
            .await?;
        match reply {
            Ok(reply) => Ok(reply),
            Err(SyncError::Store(error)) => Err(store_error(error)),
            Err(error) => Err(Error::InvalidArgument(error.to_string())),
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
            human_bytes(total.bytes_sent + total.bytes_received)
        );
    }
}
