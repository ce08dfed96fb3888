//! What this process answers when another calls it through [`Peers`]: the
//! checks that do not depend on the transport, then the owner's, the
//! replica's or the hand-off's side of the call. The gRPC service and the
//! simulator both call these, so a check made here holds on either.
//!
//! [`Peers`]: super::Peers

use super::{BatchStream, DataNode, ReadAnswer, WriteAnswer, WriteOp};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ring::NodeRef;
use crate::store::{self, Entry};
use futures::StreamExt;
use std::sync::Arc;

impl DataNode {
    /// A put or delete for local member `member` to apply as the owner.
    pub async fn serve_write(self: &Arc<Self>, member: Id, op: WriteOp) -> Result<WriteAnswer> {
        self.validate(&op.key, &op.value, op.ttl_ms)?;
        if op.delete && !op.value.is_empty() {
            return Err(Error::InvalidArgument("a delete carries a value".into()));
        }
        self.write_as_owner(member, op).await
    }

    /// A read of `key`: as local member `member`, its owner, gathering
    /// `read_quorum` answers; with `raw`, this process's own copy.
    pub async fn serve_read(
        self: &Arc<Self>,
        member: Id,
        key: &[u8],
        raw: bool,
        read_quorum: u32,
    ) -> Result<ReadAnswer> {
        store::validate_key(key).map_err(Error::InvalidArgument)?;
        if raw {
            Ok(self
                .read_local(key)?
                .map_or(ReadAnswer::Missing, ReadAnswer::Found))
        } else {
            self.read_as_owner(member, key, read_quorum).await
        }
    }

    /// Copies from an owner (or read repair, or a hand-back), or with
    /// `hint_for`, hints to hold for that member.
    pub fn serve_replicate(&self, entries: &[Entry], hint_for: Option<&NodeRef>) -> Result<u64> {
        self.accept_copies(entries, hint_for)
    }

    /// An owner's word that it purged these tombstones: only tombstones,
    /// and each only if it is that very version.
    pub fn serve_forget(&self, tombstones: &[Entry]) -> Result<u64> {
        if tombstones.iter().any(|e| !e.record.tombstone) {
            return Err(Error::InvalidArgument(
                "only tombstones can be forgotten".into(),
            ));
        }
        self.forget_tombstones(tombstones)
    }

    /// A leaving process's arc, pushed here batch by batch. A stream that
    /// stalls for four request deadlines is abandoned.
    pub async fn serve_absorb(self: &Arc<Self>, mut batches: BatchStream) -> Result<u64> {
        let idle = self.config.rpc_timeout * 4;
        let mut applied = 0u64;
        loop {
            let batch = match tokio::time::timeout(idle, batches.next()).await {
                Err(_) => {
                    return Err(Error::TimedOut("the hand-off stream stalled".into()));
                }
                Ok(None) => break,
                Ok(Some(batch)) => batch?,
            };
            applied += self.absorb(&batch)? as u64;
        }
        Ok(applied)
    }
}
