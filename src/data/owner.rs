//! The owner's side of a key: applying puts and deletes (only the owner
//! makes versions) and answering reads, with a read-through to the old
//! owner while the member's arc is still arriving.

use super::{store_error, DataNode, Entry, ReadAnswer, WriteAnswer, WriteOp};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ring::NodeRef;
use crate::store::{Record, Version};
use std::sync::Arc;

impl DataNode {
    /// Applies a put or delete as local member `member`, the key's owner.
    /// The write is applied here, then copied to the key's replicas; the
    /// answer waits for the write quorum (`Error::Quorum` if it is not met).
    pub async fn write_as_owner(self: &Arc<Self>, member: Id, op: WriteOp) -> Result<WriteAnswer> {
        let quorum = self.requested_quorum(op.write_quorum, true)?;
        let admitted = self.handoffs.admit_write().await;
        let key_id = Id::of_key(&op.key);
        let owner = match self.check_owner(member, key_id) {
            Ok(owner) => owner,
            Err(not_owner) => return Ok(WriteAnswer::NotOwner(not_owner)),
        };
        if self.handoffs.is_leaving() {
            return Ok(WriteAnswer::NotOwner(super::NotOwner {
                hint: self.first_remote_successor(&owner),
                reason: "this node is leaving the ring".into(),
            }));
        }
        let now = self.wall_ms();
        // While the arc is still arriving, the old owner may hold a newer
        // version than ours; the new one must follow it.
        let mut existed_there = false;
        if let Some(source) = self.handoffs.source(member) {
            if let Some(record) = self.read_through(&source, &op.key).await? {
                self.hlc.observe(record.version.clock);
                existed_there = !record.tombstone && !record.is_expired(now);
            }
        }
        let expires_at = (op.ttl_ms > 0).then(|| now.saturating_add(op.ttl_ms));
        let tombstone_expires = self.config.replication.tombstone_expiry(now);
        let (previous, record) = self
            .store
            .update(&op.key, |existing| {
                if let Some(existing) = existing {
                    self.hlc.observe(existing.version.clock);
                }
                let version = Version {
                    clock: self.hlc.now(now),
                    writer: member.0,
                };
                if op.delete {
                    Record::tombstone(version, tombstone_expires)
                } else {
                    Record::value(version, op.value.clone(), expires_at)
                }
            })
            .map_err(store_error)?;
        // Committed here: a hand-off need not wait for the replicas.
        drop(admitted);
        let existed_here = previous.is_some_and(|p| !p.tombstone && !p.is_expired(now));
        let version = record.version;
        let entry = Entry {
            key: op.key,
            record,
        };
        self.room_feed.publish(&entry);
        // Copied to the replicas by a task of its own: the write is
        // committed here, so its copies and hints must go out even if the
        // caller stops waiting (a gRPC handler is dropped when its client's
        // deadline passes; the simulator found writes left on the owner
        // alone that way).
        let (done, replicated) = tokio::sync::oneshot::channel();
        let data = self.clone();
        self.spawn(async move {
            let acks = data.replicate_write(&owner, entry, quorum).await;
            done.send(acks).ok();
        });
        let acks = replicated
            .await
            .map_err(|_| Error::Unavailable("this node is stopping".into()))??;
        Ok(WriteAnswer::Written {
            version,
            existed: existed_here || existed_there,
            acks,
        })
    }

    /// Reads a key as local member `member`, the key's owner: the newest
    /// of its own record and those of `read_quorum - 1` replicas (0: the
    /// owner's `--read-quorum`), repairing stale replicas afterwards.
    pub async fn read_as_owner(
        self: &Arc<Self>,
        member: Id,
        key: &[u8],
        read_quorum: u32,
    ) -> Result<ReadAnswer> {
        let quorum = self.requested_quorum(read_quorum, false)?;
        let owner = match self.check_owner(member, Id::of_key(key)) {
            Ok(owner) => owner,
            Err(not_owner) => return Ok(ReadAnswer::NotOwner(not_owner)),
        };
        // Pending first: a hand-off that ends between the two reads below
        // has then been read through, not missed.
        let pending = self.handoffs.source(member);
        let mut record = self.read_local(key)?;
        if let Some(source) = pending {
            if let Some(there) = self.read_through(&source, key).await? {
                if record.as_ref().is_none_or(|here| there.supersedes(here)) {
                    record = Some(there);
                }
            }
        }
        let record = self.read_replicas(&owner, key, record, quorum).await?;
        Ok(record.map_or(ReadAnswer::Missing, ReadAnswer::Found))
    }

    /// This process's own record of `key`, whoever owns it.
    pub fn read_local(&self, key: &[u8]) -> Result<Option<Record>> {
        self.store.get(key, self.wall_ms()).map_err(store_error)
    }

    /// The old owner's record during a hand-off. When the old owner cannot
    /// be asked, the answer is UNAVAILABLE, never "missing": the record may
    /// well be there, and the coordinator retries.
    async fn read_through(&self, source: &NodeRef, key: &[u8]) -> Result<Option<Record>> {
        match self.peers.read(source, key, true, 0).await {
            Ok(ReadAnswer::Found(record)) => Ok(Some(record)),
            Ok(_) => Ok(None),
            Err(error) => Err(Error::Unavailable(format!(
                "this member is still taking its arc over from {source}, which did not answer: {error}"
            ))),
        }
    }

    /// Applies records received from another process (last writer wins).
    pub fn absorb(&self, entries: &[Entry]) -> Result<usize> {
        let mut applied = 0;
        for entry in entries {
            self.hlc.observe(entry.record.version.clock);
            if self
                .store
                .apply(&entry.key, &entry.record)
                .map_err(store_error)?
            {
                self.room_feed.publish(entry);
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Deletes expired records in the background of a running node.
    pub fn purge_expired(&self) {
        match self.store.purge_expired(self.wall_ms(), 100_000) {
            Ok(0) => {}
            Ok(purged) => tracing::debug!("purged {purged} expired records"),
            Err(error) => tracing::warn!("purging expired records failed: {error}"),
        }
    }
}
