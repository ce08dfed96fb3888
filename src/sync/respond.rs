//! The replica's side of a round: one stateless answer per request.

use super::{SyncError, SyncReply, SyncRequest, MAX_DIGESTS};
use crate::store::{Engine, Store, StoreResult};

/// The responder's answer to one request: stateless, so any number of
/// rounds may be served at once. A listing of more than [`MAX_DIGESTS`]
/// records is refused (an honest initiator lists only small nodes).
pub fn respond<E: Engine>(store: &Store<E>, request: SyncRequest) -> Result<SyncReply, SyncError> {
    Ok(match request {
        SyncRequest::Summaries { arc, nodes } => SyncReply::Summaries(
            nodes
                .iter()
                .map(|node| store.summarize(arc, *node))
                .collect::<StoreResult<_>>()?,
        ),
        SyncRequest::Digests { arc, nodes } => match store.digests(arc, &nodes, MAX_DIGESTS)? {
            Some(digests) => SyncReply::Digests(digests),
            None => {
                return Err(SyncError::BadRequest(format!(
                    "the nodes asked for hold more than {MAX_DIGESTS} records; list smaller ones"
                )))
            }
        },
        SyncRequest::Pull { keys } => {
            let (entries, answered) = store.records(&keys)?;
            SyncReply::Pulled { entries, answered }
        }
        SyncRequest::Push { entries } => SyncReply::Pushed {
            applied: store.apply_all(&entries)?,
        },
    })
}
