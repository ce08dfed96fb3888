//! The ring task: one per process, the only owner of its [`Host`] state
//! machine. Requests from the gRPC handlers (with a oneshot for the
//! answer), answers to the host's own requests, and the stabilize and
//! fix-fingers timers all arrive on its channel; it never waits on the
//! network (every outbound request runs in a task of its own and comes
//! back as an input), and after every step it publishes the local members
//! for the data layer and their health for gRPC health checks.

use super::{data_dir, Command, NodeConfig, NodeStats, MAX_CLIENT_LOOKUPS, PURGE_INTERVAL};
use crate::data::{DataNode, LocalMember, MemberInfo, Membership, ProcessInfo};
use crate::id::Id;
use crate::ring::{Action, Host, Input, LookupError, LookupOutcome, Notice};
use crate::rpc::{self, Pool};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The task that owns the process's [`Host`]: every request, answer and
/// timer reaches the protocol through its channel.
pub(super) struct RingTask {
    pub(super) stats: Arc<NodeStats>,
    pub(super) host: Host,
    pub(super) pool: Arc<Pool>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) health: HealthReporter,
    /// Members currently reported SERVING to health checks.
    pub(super) serving: HashSet<Id>,
    /// Whether the process is reported SERVING.
    pub(super) process_serving: bool,
    pub(super) lookups: HashMap<u64, oneshot::Sender<Result<LookupOutcome, LookupError>>>,
    pub(super) next_token: u64,
    pub(super) saved_peers: Vec<String>,
    pub(super) data: Arc<DataNode>,
    /// What the ring task started and did not wait for: requests in
    /// flight, each in a task of its own, and purges of expired records.
    pub(super) spawned: TaskTracker,
    /// What the data layer sees of the local members.
    pub(super) membership: watch::Sender<Membership>,
    pub(super) config: NodeConfig,
}

impl RingTask {
    pub(super) async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        shutdown: impl Future<Output = ()>,
    ) {
        self.serve(&mut inbox, shutdown).await;
        // Hand the arcs over while still answering the ring and clients.
        let data = self.data.clone();
        self.serve(&mut inbox, data.hand_off_on_leave()).await;
        self.leave(&mut inbox).await;
    }

    /// Runs the protocol until `until` completes.
    async fn serve(
        &mut self,
        inbox: &mut mpsc::Receiver<Command>,
        until: impl Future<Output = ()>,
    ) {
        let jittered = |period: Duration| tokio::time::Instant::now() + jittered(period);
        let stabilize = tokio::time::sleep(Duration::ZERO);
        let fix_fingers = tokio::time::sleep_until(jittered(self.config.fix_fingers_interval));
        let mut purge = tokio::time::interval(PURGE_INTERVAL);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stabilize, fix_fingers, until);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = &mut until => break,
                Some(command) = inbox.recv() => self.on_command(command),
                _ = &mut stabilize => {
                    stabilize.as_mut().reset(jittered(self.config.stabilize_interval));
                    self.host.step(Input::StabilizeTick);
                    self.stats.stabilize_rounds.inc();
                    ticks += 1;
                    if ticks % 20 == 0 {
                        self.save_peers();
                    }
                }
                _ = &mut fix_fingers => {
                    fix_fingers.as_mut().reset(jittered(self.config.fix_fingers_interval));
                    self.host.step(Input::FixFingersTick);
                }
                _ = purge.tick() => {
                    let data = self.data.clone();
                    self.spawned.spawn_blocking(move || data.purge_expired());
                }
            }
            self.dispatch().await;
        }
    }

    async fn leave(&mut self, inbox: &mut mpsc::Receiver<Command>) {
        tracing::info!("leaving the ring");
        self.save_peers();
        self.host.leave();
        self.dispatch().await;
        let deadline = tokio::time::Instant::now() + self.config.rpc_timeout * 2;
        while !self.host.leave_complete() {
            tokio::select! {
                Some(command) = inbox.recv() => self.on_command(command),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("some neighbours did not acknowledge the leave in time");
                    break;
                }
            }
            self.dispatch().await;
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request {
                member,
                request,
                reply,
            } => {
                let response = self.host.handle_request(member, request);
                reply.send(response).ok();
            }
            Command::Lookup { target, reply } => {
                // Callers that gave up are forgotten; a flood of lookups is
                // refused rather than queued without bound.
                self.lookups.retain(|_, waiting| !waiting.is_closed());
                if self.lookups.len() >= MAX_CLIENT_LOOKUPS {
                    let busy = LookupError::Busy(MAX_CLIENT_LOOKUPS);
                    reply.send(Err(busy)).ok();
                    return;
                }
                let token = self.next_token;
                self.next_token += 1;
                self.lookups.insert(token, reply);
                self.host.start_lookup(target, token);
            }
            Command::Describe { reply } => {
                reply.send(self.describe()).ok();
            }
            Command::Answer(input) => self.host.step(input),
        }
    }

    fn describe(&self) -> ProcessInfo {
        ProcessInfo {
            addr: self.host.addr().to_string(),
            members: self
                .host
                .members()
                .iter()
                .map(|m| MemberInfo {
                    me: m.me().clone(),
                    joined: m.is_joined(),
                    predecessor: m.predecessor().cloned(),
                    successors: m.successors().to_vec(),
                    fingers: m.fingers_in_use(),
                    owned_records: 0,
                    replicas: Vec::new(),
                })
                .collect(),
            ..ProcessInfo::default()
        }
    }

    /// Carries out what the state machine asked for.
    async fn dispatch(&mut self) {
        for action in self.host.take_actions() {
            match action {
                Action::Send(outgoing) => {
                    tracing::trace!(to = %outgoing.to, member = ?outgoing.member, request = ?outgoing.request, "request out");
                    let pool = self.pool.clone();
                    let commands = self.commands.clone();
                    self.spawned.spawn(async move {
                        let input = match pool.call(&outgoing).await {
                            Ok(response) => Input::Reply {
                                id: outgoing.id,
                                response,
                            },
                            Err(status) => {
                                tracing::debug!(to = %outgoing.to, "request failed: {}", status.message());
                                Input::Failed { id: outgoing.id }
                            }
                        };
                        commands.send(Command::Answer(input)).await.ok();
                    });
                }
                Action::LookupDone { token, result } => {
                    if let Some(reply) = self.lookups.remove(&token) {
                        reply.send(result).ok();
                    }
                }
                Action::Notice(notice) => {
                    if let Notice::Joined {
                        member,
                        successor,
                        before,
                    } = &notice
                    {
                        self.data
                            .take_over(member.clone(), successor.clone(), before.clone());
                    }
                    self.log_notice(notice)
                }
            }
        }
        self.publish_membership();
        self.update_health().await;
    }

    /// Shows the data layer the local members as they are now.
    fn publish_membership(&self) {
        let members: Vec<LocalMember> = self
            .host
            .members()
            .iter()
            .map(|m| LocalMember {
                me: m.me().clone(),
                joined: m.is_joined(),
                predecessor: m.predecessor().cloned(),
                successors: m.successors().to_vec(),
            })
            .collect();
        self.membership.send_if_modified(|current| {
            let changed = **current != members;
            if changed {
                *current = Arc::new(members);
            }
            changed
        });
    }

    fn log_notice(&self, notice: Notice) {
        let first_member = self.host.members().first().map(|m| m.id());
        if let Some(event) = membership_event(&notice) {
            self.stats.events.push(event);
        }
        match notice {
            Notice::Created { member } => tracing::info!(%member, "started a new ring"),
            Notice::Joined {
                member, successor, ..
            } => {
                tracing::info!(%member, %successor, "joined the ring")
            }
            Notice::JoinFailed {
                member,
                error,
                retry_in_ticks,
            } => {
                let wait = self.config.stabilize_interval * retry_in_ticks;
                // One line per attempt, not one per virtual node.
                if Some(member) == first_member {
                    tracing::warn!(
                        "cannot join the ring: {error}; retrying in {}",
                        humantime::format_duration(wait)
                    );
                } else {
                    tracing::debug!(%member, "cannot join the ring: {error}");
                }
            }
            Notice::SuccessorChanged { member, from, to } => {
                tracing::debug!(%member, from = ?from, %to, "successor changed")
            }
            Notice::PredecessorChanged { member, from, to } => {
                tracing::debug!(%member, from = ?from, to = ?to, "predecessor changed")
            }
            Notice::SuccessorDead { member, dead } => {
                tracing::info!(%member, %dead, "successor presumed dead")
            }
            Notice::Orphaned { member } => {
                tracing::warn!(%member, "every known successor is dead; rejoining through the bootstrap nodes")
            }
        }
    }

    /// Reports each joined member SERVING to gRPC health checks, and every
    /// other member NOT_SERVING; the process ([`rpc::PROCESS_HEALTH`]) is
    /// SERVING while any of its members is in the ring.
    async fn update_health(&mut self) {
        let any_joined = self.host.members().iter().any(|m| m.is_joined());
        if any_joined != self.process_serving {
            let status = if any_joined {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            self.health
                .set_service_status(rpc::PROCESS_HEALTH, status)
                .await;
            self.process_serving = any_joined;
        }
        for member in self.host.members() {
            let joined = member.is_joined();
            if joined == self.serving.contains(&member.id()) {
                continue;
            }
            let status = if joined {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            self.health
                .set_service_status(rpc::member_health_name(member.id()), status)
                .await;
            if joined {
                self.serving.insert(member.id());
            } else {
                self.serving.remove(&member.id());
            }
        }
    }

    fn save_peers(&mut self) {
        let peers = self.host.known_addrs();
        if peers.is_empty() || peers == self.saved_peers {
            return;
        }
        match data_dir::save_peers(&self.config.data_dir, &peers) {
            Ok(()) => self.saved_peers = peers,
            Err(e) => tracing::warn!(
                "cannot save known peers in {}: {e}",
                self.config.data_dir.display()
            ),
        }
    }
}

/// `period` give or take 20%, at random: two processes whose timers fell
/// together would otherwise query each other while both are busy, and
/// answer each other `Pending`, on every tick for ever.
fn jittered(period: Duration) -> Duration {
    period.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

/// A membership change in words, for the dashboard's list of events;
/// `None` for the routine ones (failed join attempts are logged instead).
fn membership_event(notice: &Notice) -> Option<String> {
    Some(match notice {
        Notice::Created { member } => format!("{member} started a new ring"),
        Notice::Joined {
            member, successor, ..
        } => format!("{member} joined before {successor}"),
        Notice::SuccessorChanged { member, to, .. } => {
            format!("{member}: successor is now {to}")
        }
        Notice::PredecessorChanged { member, to, .. } => match to {
            Some(to) => format!("{member}: predecessor is now {to}"),
            None => format!("{member}: predecessor forgotten"),
        },
        Notice::SuccessorDead { member, dead } => {
            format!("{member}: successor {dead} presumed dead")
        }
        Notice::Orphaned { member } => {
            format!("{member}: every known successor dead, rejoining")
        }
        Notice::JoinFailed { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Node;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot::error::TryRecvError;

    type Answer = oneshot::Receiver<Result<LookupOutcome, LookupError>>;

    /// Asks the ring task for a lookup, as a client's request does.
    fn start_lookup(task: &mut RingTask, target: u64) -> Answer {
        let (reply, answer) = oneshot::channel();
        task.on_command(Command::Lookup {
            target: Id(target),
            reply,
        });
        answer
    }

    #[tokio::test]
    async fn a_node_runs_at_most_1024_client_lookups_at_once_and_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let config = crate::node::tests::test_config(dir.path(), &addr);
        let Node { mut ring_task, .. } = Node::start(config, listener).await.unwrap();
        // The node starts its ring, so every lookup has an answer.
        ring_task.host.step(Input::StabilizeTick);

        // Each lookup runs until its answer is handed back to its caller.
        let mut running: Vec<Answer> = (0..1024).map(|n| start_lookup(&mut ring_task, n)).collect();
        for answer in &mut running {
            assert_eq!(answer.try_recv().unwrap_err(), TryRecvError::Empty);
        }
        let mut refused = start_lookup(&mut ring_task, 1024);
        assert!(matches!(
            refused.try_recv(),
            Ok(Err(LookupError::Busy(1024)))
        ));

        // A caller that gave up frees its place, and only its place.
        drop(running.pop());
        let mut accepted = start_lookup(&mut ring_task, 1025);
        assert_eq!(accepted.try_recv().unwrap_err(), TryRecvError::Empty);
        running.push(accepted);
        let mut refused = start_lookup(&mut ring_task, 1026);
        assert!(matches!(
            refused.try_recv(),
            Ok(Err(LookupError::Busy(1024)))
        ));

        // Once the answers have gone out, the node takes lookups again.
        ring_task.dispatch().await;
        for answer in &mut running {
            assert!(matches!(answer.try_recv(), Ok(Ok(_))));
        }
        let mut accepted = start_lookup(&mut ring_task, 1027);
        assert_eq!(accepted.try_recv().unwrap_err(), TryRecvError::Empty);
        ring_task.dispatch().await;
        assert!(matches!(accepted.try_recv(), Ok(Ok(_))));
    }

    #[test]
    fn timer_periods_vary_by_up_to_twenty_percent_either_way() {
        let period = Duration::from_millis(500);
        let draws: Vec<Duration> = (0..10_000).map(|_| jittered(period)).collect();
        let (low, high) = (period.mul_f64(0.8), period.mul_f64(1.2));
        assert!(draws.iter().all(|d| *d >= low && *d <= high));
        // Spread over the whole range, not stuck at one value: with 10,000
        // uniform draws, each tenth of the range is all but certainly hit.
        for tenth in 0..10 {
            let from = low + (high - low) * tenth / 10;
            let to = low + (high - low) * (tenth + 1) / 10;
            assert!(
                draws.iter().any(|d| *d >= from && *d <= to),
                "no period in {from:?}..{to:?}"
            );
        }
    }
}
