//! What a stored key holds: a value, a version, a tombstone flag and an
//! optional expiry, and the byte encoding of all four.

use std::cmp::Ordering;

/// The version of a write: a hybrid logical clock reading and the id of the
/// writer that made it. Versions are totally ordered, first by clock, then
/// by writer, so two replicas that see the same writes always agree on the
/// last one (last writer wins).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// Hybrid logical clock: milliseconds since the Unix epoch in the top 48
    /// bits, a counter in the low 16 (see [`crate::store::Hlc`]).
    pub clock: u64,
    pub writer: u64,
}

/// One stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub version: Version,
    /// A delete: kept so that an older write arriving later cannot revive
    /// the key.
    pub tombstone: bool,
    /// Milliseconds since the Unix epoch after which the record is gone.
    pub expires_at: Option<u64>,
    pub value: Vec<u8>,
}

/// Why stored bytes could not be read back as a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record format {0} is unknown")]
    Format(u8),
}

const FORMAT: u8 = 1;
const HEADER: usize = 1 + 1 + 8 + 8 + 8;
const TOMBSTONE: u8 = 1;
const EXPIRES: u8 = 2;

impl Record {
    pub fn value(version: Version, value: Vec<u8>, expires_at: Option<u64>) -> Record {
        Record {
            version,
            tombstone: false,
            expires_at,
            value,
        }
    }

    /// A delete; with `expires_at`, purged then (the tombstone grace):
    /// until it is purged an expired tombstone still supersedes older
    /// versions, it is only not copied to a replica that lacks the key.
    pub fn tombstone(version: Version, expires_at: Option<u64>) -> Record {
        Record {
            version,
            tombstone: true,
            expires_at,
            value: Vec::new(),
        }
    }

    /// Whether the record has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_ms)
    }

    /// Whether `self` supersedes `other` (last writer wins).
    pub fn supersedes(&self, other: &Record) -> bool {
        self.version.cmp(&other.version) == Ordering::Greater
    }

    /// `format | flags | clock | writer | expiry | value`, integers
    /// big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER + self.value.len());
        let mut flags = 0;
        if self.tombstone {
            flags |= TOMBSTONE;
        }
        if self.expires_at.is_some() {
            flags |= EXPIRES;
        }
        bytes.push(FORMAT);
        bytes.push(flags);
        bytes.extend_from_slice(&self.version.clock.to_be_bytes());
        bytes.extend_from_slice(&self.version.writer.to_be_bytes());
        bytes.extend_from_slice(&self.expires_at.unwrap_or(0).to_be_bytes());
        bytes.extend_from_slice(&self.value);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() < HEADER {
            return Err(DecodeError::Short(bytes.len()));
        }
        if bytes[0] != FORMAT {
            return Err(DecodeError::Format(bytes[0]));
        }
        let flags = bytes[1];
        let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Ok(Record {
            version: Version {
                clock: word(2),
                writer: word(10),
            },
            tombstone: flags & TOMBSTONE != 0,
            expires_at: (flags & EXPIRES != 0).then(|| word(18)),
            value: bytes[HEADER..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn records_survive_encoding(
            clock in any::<u64>(), writer in any::<u64>(), tombstone in any::<bool>(),
            expires_at in proptest::option::of(any::<u64>()), value in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let record = Record { version: Version { clock, writer }, tombstone, expires_at, value };
            prop_assert_eq!(Record::decode(&record.encode()).unwrap(), record);
        }
    }

    #[test]
    fn damaged_bytes_are_refused() {
        assert_eq!(Record::decode(&[1, 0, 0]), Err(DecodeError::Short(3)));
        let mut bytes = Record::tombstone(Version::default(), None).encode();
        bytes[0] = 9;
        assert_eq!(Record::decode(&bytes), Err(DecodeError::Format(9)));
    }

    #[test]
    fn the_later_version_wins_and_the_writer_breaks_ties() {
        let older = Record::value(
            Version {
                clock: 5,
                writer: 9,
            },
            b"a".to_vec(),
            None,
        );
        let newer = Record::tombstone(
            Version {
                clock: 6,
                writer: 1,
            },
            None,
        );
        let tie = Record::value(
            Version {
                clock: 6,
                writer: 2,
            },
            b"b".to_vec(),
            None,
        );
        assert!(newer.supersedes(&older));
        assert!(!older.supersedes(&newer));
        assert!(tie.supersedes(&newer));
        assert!(!newer.supersedes(&newer));
    }
}
