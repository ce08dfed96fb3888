//! Chat rooms on a running node: the messages of a room held here (as its
//! owner or a replica), and a feed of those stored here as they arrive,
//! for `Api.Watch`. The node sees only room locations and sealed values
//! (see [`crate::room`]).

use super::{DataNode, Entry};
use crate::error::Result;
use crate::id::{split_room_key, Id};
use tokio::sync::{broadcast, mpsc};

/// Most messages a watch sends as history.
pub const MAX_HISTORY: usize = 1000;
/// Room messages a watcher may fall behind the feed by before it rereads
/// the room from the store.
pub const FEED_CAPACITY: usize = 1024;

/// Chat room messages as they are stored here, for watchers.
pub(crate) struct RoomFeed {
    sender: broadcast::Sender<Entry>,
}

impl Default for RoomFeed {
    fn default() -> RoomFeed {
        RoomFeed {
            sender: broadcast::channel(FEED_CAPACITY).0,
        }
    }
}

impl RoomFeed {
    /// Hands `entry` to the room's watchers on this process, if it is a
    /// live room message.
    pub(crate) fn publish(&self, entry: &Entry) {
        if !entry.record.tombstone
            && split_room_key(&entry.key).is_some()
            && self.sender.receiver_count() > 0
        {
            // No receiver left is not an error.
            let _ = self.sender.send(entry.clone());
        }
    }
}

impl DataNode {
    /// The messages of the room at `location` held here, unexpired and
    /// sent at or after `since_ms`, in send order: the last `limit`.
    pub fn room_history(
        &self,
        location: &[u8; 32],
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let (low, high) = Id::room_range(location);
        let now = self.wall_ms();
        // The latest `limit` so far, by key: keys of one room sort by send
        // time, then id. Never more than `limit` held, however big the room.
        let mut found: std::collections::BTreeMap<Vec<u8>, crate::store::Record> =
            std::collections::BTreeMap::new();
        self.store
            .visit_ids_while(low.0, high.0, |key, record| {
                let ours = crate::room::parse_key(key)
                    .is_some_and(|(at, sent_at_ms, _)| at == *location && sent_at_ms >= since_ms);
                if ours && !record.tombstone && !record.is_expired(now) && limit > 0 {
                    found.insert(key.to_vec(), record);
                    if found.len() > limit {
                        found.pop_first();
                    }
                }
                true
            })
            .map_err(super::store_error)?;
        Ok(found
            .into_iter()
            .map(|(key, record)| Entry { key, record })
            .collect())
    }

    /// Watches the room at `location`: first its last `history` messages
    /// sent since `since_ms` held here, then every one stored here from
    /// now on, each once, until the receiver is dropped.
    pub fn watch_room(
        self: &std::sync::Arc<Self>,
        location: [u8; 32],
        since_ms: u64,
        history: usize,
    ) -> mpsc::Receiver<Result<Entry>> {
        let (sender, receiver) = mpsc::channel(64);
        // Subscribed before the history is read: nothing falls between.
        let mut feed = self.room_feed.sender.subscribe();
        let data = self.clone();
        self.spawn(async move {
            let mut sent = crate::room::RecentKeys::default();
            let mut backlog = match data
                .clone()
                .history_blocking(location, since_ms, history)
                .await
            {
                Ok(entries) => entries,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            loop {
                for entry in backlog.drain(..) {
                    if sent.insert(&entry.key) && sender.send(Ok(entry)).await.is_err() {
                        return; // the watcher went away
                    }
                }
                let entry = tokio::select! {
                    biased;
                    _ = sender.closed() => return,
                    received = feed.recv() => received,
                };
                match entry {
                    Ok(entry) => {
                        let ours =
                            split_room_key(&entry.key).is_some_and(|(at, _)| *at == location);
                        if ours {
                            backlog.push(entry);
                        }
                    }
                    // Fell behind: what was missed is in the store.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        match data
                            .clone()
                            .history_blocking(location, since_ms, MAX_HISTORY)
                            .await
                        {
                            Ok(entries) => backlog = entries,
                            Err(error) => {
                                let _ = sender.send(Err(error)).await;
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        receiver
    }

    async fn history_blocking(
        self: std::sync::Arc<Self>,
        location: [u8; 32],
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        self.store_work(move |data| data.room_history(&location, since_ms, limit))
            .await?
    }
}
