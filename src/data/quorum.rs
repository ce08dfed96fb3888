//! The owner's side of replication: copying each write to the key's
//! replicas and waiting for the write quorum, gathering the read quorum
//! and repairing stale replicas. Replicas that cannot take a copy get a
//! hint ([`super::hints`]).

use super::{DataNode, LocalMember, ReadAnswer};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::replica::{preference_from, Preference, Quorum, Quorums, FALLBACKS};
use crate::ring::NodeRef;
use crate::store::{Entry, Record};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a preference list worked out with remote calls is trusted
/// while the owner's successor list stays the same: members further on
/// may change without the owner noticing.
const PREFERENCE_TTL: Duration = Duration::from_secs(5);
/// Successor lists fetched at most to extend one preference list.
const MAX_EXTENSIONS: usize = 8;

/// Each local member's preference list, with what it was worked out from.
#[derive(Default)]
pub(crate) struct PreferenceCache {
    by_member: Mutex<BTreeMap<Id, CachedPreference>>,
}

/// A member's preference list and what it was worked out from.
#[derive(Clone, Debug)]
struct CachedPreference {
    successors: Vec<NodeRef>,
    /// The successor list alone named enough processes: no remote list
    /// went into the preference, so it cannot go stale on its own.
    from_successors_alone: bool,
    preference: Preference,
    at: Instant,
}

/// One replica's answer to a quorum read.
type ReplicaRead = (NodeRef, std::result::Result<Option<Record>, String>);

impl DataNode {
    /// The quorum a request asked for (0: this node's default), or
    /// INVALID_ARGUMENT if it is more than `N`.
    pub(super) fn requested_quorum(&self, asked: u32, write: bool) -> Result<Quorum> {
        let replication = &self.config.replication;
        let (default, what) = if write {
            (replication.write_quorum, "write")
        } else {
            (replication.read_quorum, "read")
        };
        replication
            .requested(asked, default, what)
            .map_err(Error::InvalidArgument)
    }

    /// The processes after `owner` that hold its arc's copies (then the
    /// fallbacks for hints): from its successor list, extended with the
    /// successor lists of the members at its end when it names too few
    /// processes.
    pub(super) async fn preference(&self, owner: &LocalMember) -> Preference {
        let replicas = self.config.replication.replicas;
        if let Some(cached) = self.cached_preference(owner, true) {
            return cached;
        }
        let wanted = replicas.saturating_sub(1) + FALLBACKS;
        let mut walk = owner.successors.clone();
        let mut preference = preference_from(&owner.me, &walk, wanted);
        let mut extensions = 0;
        let mut failed = false;
        while !preference.is_complete(replicas) && extensions < MAX_EXTENSIONS {
            let Some(last) = walk.last().cloned() else {
                break;
            };
            let more = if last.addr == self.addr {
                self.member(last.id)
                    .map(|m| m.successors)
                    .unwrap_or_default()
            } else {
                match self.peers.state(&last).await {
                    Ok((_, list)) => list,
                    Err(error) => {
                        tracing::debug!(member = %owner.me, asked = %last, "cannot extend the preference list: {error}");
                        failed = true;
                        break;
                    }
                }
            };
            if more.is_empty() {
                break;
            }
            walk.extend(more);
            extensions += 1;
            preference = preference_from(&owner.me, &walk, wanted);
        }
        // A list cut short by a failed call is used once, not remembered:
        // the next request asks again (the simulator found rounds that
        // skipped a replica for the whole life of such a list).
        if failed {
            return preference;
        }
        self.preferences
            .by_member
            .lock()
            .expect("preferences lock")
            .insert(
                owner.me.id,
                CachedPreference {
                    successors: owner.successors.clone(),
                    from_successors_alone: extensions == 0 && preference.is_complete(replicas),
                    preference: preference.clone(),
                    at: self.clock.now(),
                },
            );
        preference
    }

    /// The preference list worked out last for `owner`, if still good:
    /// computed from the same successor list, and recently unless the
    /// successor list alone was enough (`fresh`; otherwise any age does,
    /// for reports).
    pub(super) fn cached_preference(&self, owner: &LocalMember, fresh: bool) -> Option<Preference> {
        let preferences = self.preferences.by_member.lock().expect("preferences lock");
        let cached = preferences.get(&owner.me.id)?;
        let recent = cached.from_successors_alone
            || !fresh
            || self.clock.now().duration_since(cached.at) < PREFERENCE_TTL;
        (cached.successors == owner.successors && recent).then(|| cached.preference.clone())
    }

    /// Copies a record the owner just wrote to the other replicas, and
    /// waits until the quorum `asked` (the owner's copy included) is met.
    /// Replicas that do not answer get a hint, in the background.
    pub(super) async fn replicate_write(
        self: &Arc<Self>,
        owner: &LocalMember,
        entry: Entry,
        asked: Quorum,
    ) -> Result<usize> {
        let replicas = self.config.replication.replicas;
        let preference = self.preference(owner).await;
        let quorum = Quorums::effective(replicas, asked, &preference);
        let targets = preference.replicas(replicas).to_vec();
        let fallbacks = preference.fallbacks(replicas).to_vec();
        let (answers, mut answered) = mpsc::channel(targets.len().max(1));
        for target in targets {
            let (data, entry, fallbacks, answers) = (
                self.clone(),
                entry.clone(),
                fallbacks.clone(),
                answers.clone(),
            );
            self.spawn(async move {
                let outcome = data
                    .copy_to(&target, std::slice::from_ref(&entry), None)
                    .await;
                let failed = outcome.is_err();
                answers.send((target.clone(), outcome)).await.ok();
                if failed {
                    data.hint(&target, &entry, &fallbacks).await;
                }
            });
        }
        drop(answers);
        let mut acks = 1;
        let mut problems = Vec::new();
        while acks < quorum.needed {
            match answered.recv().await {
                Some((_, Ok(()))) => acks += 1,
                Some((target, Err(problem))) => {
                    problems.push(format!("{}: {problem}", target.addr))
                }
                None => break,
            }
        }
        if acks >= quorum.needed {
            return Ok(acks);
        }
        if problems.is_empty() {
            problems.push(format!(
                "only {} other replicas are known",
                preference.replicas(replicas).len()
            ));
        }
        Err(Error::Quorum(format!(
            "{acks} of W={} acknowledgements ({}); the write stays on the replicas that took it",
            quorum.needed,
            problems.join("; ")
        )))
    }

    /// Sends records to `target`'s process within the request deadline:
    /// copies, or with `hint_for`, hints to hold for that member.
    pub(super) async fn copy_to(
        &self,
        target: &NodeRef,
        entries: &[Entry],
        hint_for: Option<&NodeRef>,
    ) -> std::result::Result<(), String> {
        match tokio::time::timeout(
            self.config.rpc_timeout,
            self.peers.replicate(target, entries, hint_for),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.message()),
            Err(_) => Err("no answer in time".into()),
        }
    }

    /// The newest of `local` (the owner's record) and the records of
    /// enough replicas to meet the quorum `asked`, the owner included. The
    /// replicas still answering after that are waited for in the
    /// background, and every replica found stale (and the owner itself)
    /// is sent the newest record.
    ///
    /// Only replicas *caught up* with the arc (a complete anti-entropy
    /// round of the arc as it is now has succeeded with them) count
    /// towards an early answer, and only as many as needed are asked.
    /// Otherwise every replica is asked and waited for: after a crash the
    /// owner's arc has grown and a process new to the preference list may
    /// not hold it yet, while the one holding the last write's other copy
    /// is still in the list.
    pub(super) async fn read_replicas(
        self: &Arc<Self>,
        owner: &LocalMember,
        key: &[u8],
        local: Option<Record>,
        asked: Quorum,
    ) -> Result<Option<Record>> {
        let replicas = self.config.replication.replicas;
        if matches!(asked, Quorum::Default(1) | Quorum::Asked(1)) {
            return Ok(local);
        }
        let preference = self.preference(owner).await;
        let quorum = Quorums::effective(replicas, asked, &preference);
        let targets = preference.replicas(replicas).to_vec();
        if quorum.needed <= 1 {
            return Ok(local);
        }
        // Caught-up replicas are asked first, only as many as the quorum
        // needs; the others only if one of those fails or too few are
        // caught up.
        let (mut first, mut rest): (Vec<NodeRef>, Vec<NodeRef>) = targets
            .iter()
            .cloned()
            .partition(|target| self.caught_up(owner, target));
        if first.len() >= quorum.needed - 1 {
            rest.extend(first.split_off(quorum.needed - 1));
        } else {
            first.append(&mut rest);
        }
        let (answers, mut answered) = mpsc::channel::<ReplicaRead>(targets.len().max(1));
        let mut outstanding = self.ask_for_records(&first, key, &answers);
        let mut heard: Vec<(NodeRef, Option<Record>)> = Vec::new();
        let mut problems = Vec::new();
        let mut caught_up = 0;
        while 1 + caught_up < quorum.needed {
            if outstanding == 0 {
                if rest.is_empty() {
                    break;
                }
                outstanding += self.ask_for_records(&std::mem::take(&mut rest), key, &answers);
                continue;
            }
            let Some((target, outcome)) = answered.recv().await else {
                break;
            };
            outstanding -= 1;
            match outcome {
                Ok(record) => {
                    if self.caught_up(owner, &target) {
                        caught_up += 1;
                    }
                    heard.push((target, record));
                }
                Err(problem) => {
                    problems.push(format!("{}: {problem}", target.addr));
                    outstanding += self.ask_for_records(&std::mem::take(&mut rest), key, &answers);
                }
            }
        }
        drop(answers);
        let newest = newest_of(
            local
                .iter()
                .chain(heard.iter().filter_map(|(_, r)| r.as_ref())),
        );
        if 1 + heard.len() < quorum.needed {
            if problems.is_empty() {
                problems.push(format!("only {} other replicas are known", targets.len()));
            }
            return Err(Error::Quorum(format!(
                "{} of R={} answers ({})",
                1 + heard.len(),
                quorum.needed,
                problems.join("; ")
            )));
        }
        let data = self.clone();
        let key = key.to_vec();
        self.spawn(async move {
            // The late answers too, then repair whoever is behind.
            while let Some((target, outcome)) = answered.recv().await {
                if let Ok(record) = outcome {
                    heard.push((target, record));
                }
            }
            data.repair_read(&key, local, heard).await;
        });
        Ok(newest)
    }

    /// Asks each of `targets` for its copy of `key`, each answer (or
    /// failure) arriving on `answers`; returns how many were asked.
    fn ask_for_records(
        self: &Arc<Self>,
        targets: &[NodeRef],
        key: &[u8],
        answers: &mpsc::Sender<ReplicaRead>,
    ) -> usize {
        for target in targets.iter().cloned() {
            let (data, key, answers) = (self.clone(), key.to_vec(), answers.clone());
            self.spawn(async move {
                let read = tokio::time::timeout(
                    data.config.rpc_timeout,
                    data.peers.read(&target, &key, true, 0),
                )
                .await;
                let outcome = match read {
                    Ok(Ok(ReadAnswer::Found(record))) => Ok(Some(record)),
                    Ok(Ok(ReadAnswer::Missing)) => Ok(None),
                    Ok(Ok(_)) => Err("answered as if it were the owner".to_string()),
                    Ok(Err(error)) => Err(error.message()),
                    Err(_) => Err("no answer in time".to_string()),
                };
                answers.send((target, outcome)).await.ok();
            });
        }
        targets.len()
    }

    /// Read repair: the newest record seen goes to every replica that
    /// answered with an older one or none, and to this store if it is
    /// behind.
    async fn repair_read(
        &self,
        key: &[u8],
        local: Option<Record>,
        heard: Vec<(NodeRef, Option<Record>)>,
    ) {
        let Some(newest) = newest_of(
            local
                .iter()
                .chain(heard.iter().filter_map(|(_, r)| r.as_ref())),
        ) else {
            return;
        };
        let behind = |record: &Option<Record>| record.as_ref().is_none_or(|r| newest.supersedes(r));
        let entry = Entry {
            key: key.to_vec(),
            record: newest.clone(),
        };
        if behind(&local) {
            if let Err(error) = self.absorb(std::slice::from_ref(&entry)) {
                tracing::warn!("read repair here failed: {error}");
            }
        }
        for (target, record) in &heard {
            if behind(record) {
                match self
                    .copy_to(target, std::slice::from_ref(&entry), None)
                    .await
                {
                    Ok(()) => tracing::debug!(%target, "read repair"),
                    Err(problem) => tracing::debug!(%target, "read repair failed: {problem}"),
                }
            }
        }
    }
}

/// The newest of some records.
fn newest_of<'a>(records: impl Iterator<Item = &'a Record>) -> Option<Record> {
    records.max_by_key(|record| record.version).cloned()
}
