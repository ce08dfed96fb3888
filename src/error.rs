//! The library's one error type, with variants that mean something to the
//! caller, and the helpers that put keys and sizes into messages.
//!
//! Depends on nothing in the crate, and on no network type: the mapping to
//! and from gRPC status codes lives at the edge (`rpc::status`).

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (too long, empty, malformed); retrying it
    /// unchanged will not help.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The addressed member is not ready for this yet (a hand-off asked of
    /// an old owner that has not yet seen its new predecessor); asking again
    /// later will succeed.
    #[error("not ready: {0}")]
    NotReady(String),
    /// A stream stalled, or a call got no answer within its deadline;
    /// retrying later may help.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// A node needed for the answer could not be reached, or this node is
    /// not (yet, or any more) in a ring; retrying later may help.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Fewer replicas answered than the write or read quorum needs; the
    /// message says how many did. (A write answered so may or may not
    /// survive.)
    #[error("unavailable: {0}")]
    Quorum(String),
    /// A configuration or data-directory problem found at start-up.
    #[error("configuration: {0}")]
    Config(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What went wrong, without the kind in front: for reports that say
    /// the kind another way (a failed round, a replica's health).
    pub fn message(&self) -> String {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::NotReady(m)
            | Error::TimedOut(m)
            | Error::Unavailable(m)
            | Error::Quorum(m)
            | Error::Config(m) => m.clone(),
            Error::Io(error) => error.to_string(),
        }
    }
}

/// A key for messages: as text when it is printable, else in hex.
pub fn printable(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if text.chars().all(|c| !c.is_control()) && text.len() <= 64 => {
            format!("{text:?}")
        }
        _ => {
            let hex: String = key.iter().take(32).map(|b| format!("{b:02x}")).collect();
            let more = if key.len() > 32 { "…" } else { "" };
            format!("0x{hex}{more} ({} bytes)", key.len())
        }
    }
}

/// `1.5 MiB`-style sizes for logs.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_as_text_when_printable_and_hex_otherwise() {
        assert_eq!(printable(b"hello"), "\"hello\"");
        assert_eq!(printable(&[0, 255]), "0x00ff (2 bytes)");
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
