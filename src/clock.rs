//! Time, as the library reads it: wall-clock milliseconds for versions and
//! expiry, and a monotonic instant for deadlines and pauses.
//!
//! Depends on nothing in the crate. [`Clock::System`] reads the machine's
//! clock; [`Clock::Virtual`] derives wall time from tokio's clock, so that
//! under `tokio::time::pause()` (the simulator) every reading, wall or
//! monotonic, is a pure function of the simulated time. Code that decides
//! with time takes a `Clock` (or a `now` argument) instead of reading the
//! system clock itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, from the machine's clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a component reads the time from.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// The machine's clock: what every running node uses.
    System,
    /// Wall time `base_ms` at tokio instant `start`, advancing with tokio's
    /// clock (paused and advanced by hand in the simulator).
    Virtual {
        base_ms: u64,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub fn wall_ms(&self) -> u64 {
        match self {
            Clock::System => wall_ms(),
            Clock::Virtual { base_ms, start } => base_ms + start.elapsed().as_millis() as u64,
        }
    }

    /// A monotonic reading for deadlines (tokio's, so it pauses with it).
    pub fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}

/// A duration rounded to whole milliseconds, for messages.
pub fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_virtual_clock_advances_with_tokio_time_only() {
        let clock = Clock::Virtual {
            base_ms: 1_000,
            start: tokio::time::Instant::now(),
        };
        assert_eq!(clock.wall_ms(), 1_000);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(clock.wall_ms(), 1_250);
    }
}
