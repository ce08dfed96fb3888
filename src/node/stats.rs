//! What the node counts for the admin port: lookups and their hops,
//! stabilization rounds, and the last membership changes.

use crate::clock::wall_ms;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Membership events kept for the dashboard.
const MAX_EVENTS: usize = 50;

/// The ring side of one process's metrics.
#[derive(Debug)]
pub struct NodeStats {
    /// Processes asked by each lookup this process ran.
    pub lookup_hops: Histogram,
    /// Stabilization rounds run by this process's members.
    pub stabilize_rounds: Counter,
    /// The last membership changes, for the dashboard.
    pub events: Events,
}

impl Default for NodeStats {
    fn default() -> NodeStats {
        NodeStats {
            lookup_hops: Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 16.0, 32.0]),
            stabilize_rounds: Counter::default(),
            events: Events::default(),
        }
    }
}

/// The last membership changes of this process's members, newest last.
#[derive(Debug, Default)]
pub struct Events {
    events: Mutex<VecDeque<(u64, String)>>,
}

impl Events {
    pub fn push(&self, text: String) {
        let mut events = self.events.lock().expect("events lock");
        if events.len() == MAX_EVENTS {
            events.pop_front();
        }
        events.push_back((wall_ms(), text));
    }

    pub fn list(&self) -> Vec<(u64, String)> {
        self.events
            .lock()
            .expect("events lock")
            .iter()
            .cloned()
            .collect()
    }
}
