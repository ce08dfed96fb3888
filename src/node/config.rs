//! What a node is told at start: its addresses, its ring's and its data
//! layer's settings, each checked before anything starts.

use super::MAX_VALUE_LIMIT;
use crate::error::{Error, Result};
use crate::replica::ReplicationConfig;
use crate::ring::{self, validate_addr};
use crate::rpc;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a node needs to run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The address other processes use to reach this one (`host:port`).
    pub advertise: String,
    /// Addresses to join through, in order. Containing `advertise` means
    /// "start a new ring if nobody else answers".
    pub bootstrap: Vec<String>,
    pub vnodes: u32,
    pub ring: ring::Config,
    pub stabilize_interval: Duration,
    pub fix_fingers_interval: Duration,
    /// Deadline of every request to another process, health checks included.
    pub rpc_timeout: Duration,
    pub data_dir: PathBuf,
    /// Largest value accepted, in bytes.
    pub max_value: usize,
    /// `N`, `W`, `R` and anti-entropy.
    pub replication: ReplicationConfig,
}

impl NodeConfig {
    /// Checks the configuration before anything starts.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::Config(message));
        validate_addr(&self.advertise).map_err(|e| Error::Config(format!("--advertise: {e}")))?;
        for seed in &self.bootstrap {
            validate_addr(seed).map_err(|e| Error::Config(format!("--bootstrap {seed}: {e}")))?;
        }
        if self.vnodes == 0 || self.vnodes > 256 {
            return invalid(format!(
                "--vnodes must be between 1 and 256, not {}",
                self.vnodes
            ));
        }
        if self.ring.successors < 2 || self.ring.successors > rpc::MAX_MEMBER_LIST {
            return invalid(format!(
                "--successors must be between 2 and {}, not {}",
                rpc::MAX_MEMBER_LIST,
                self.ring.successors
            ));
        }
        if self.stabilize_interval.is_zero() || self.fix_fingers_interval.is_zero() {
            return invalid("intervals must be longer than zero".into());
        }
        self.replication.validate().map_err(Error::Config)?;
        if self.max_value == 0 || self.max_value > MAX_VALUE_LIMIT {
            return invalid(format!(
                "--max-value-size must be between 1 byte and {} MiB",
                MAX_VALUE_LIMIT >> 20
            ));
        }
        Ok(())
    }
}
