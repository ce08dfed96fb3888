//! Rooms: where a room's messages live on the ring, and how they are
//! sealed so that the processes storing them learn neither the room's name
//! nor what was said.
//!
//! A room is named by its name and an optional passphrase. From them two
//! unrelated 32-byte values are derived with blake3's key derivation: the
//! room's *location*, which every message key carries and which places
//! the room on the ring ([`crate::id::Id::of_room_message`]), and the room
//! *key*, which never leaves the clients. A message is stored under
//!
//! ```text
//! "\0room\0" | location (32) | sent at, ms (8, big-endian) | message id (16)
//! ```
//!
//! with the value `1 | nonce (24) | XChaCha20-Poly1305(room key, nonce,
//! padded plaintext, associated data = the key)`. Binding the key as
//! associated data means a stored message cannot be moved to another room,
//! time or id without failing to open. The plaintext (nickname and text)
//! is padded to a multiple of [`PAD`] bytes, so stored sizes say little
//! about what was said.
//!
//! Also here: the onion layers that carry a message through relays
//! ([`onion`]), and [`RecentKeys`], the bound on what a watch or a client
//! remembers having sent or shown. Depends on `id` and `ring` only: the
//! nodes (`data`, `rpc`) and the clients (`chat`) both build on it.

pub mod onion;

use crate::id::{split_room_key, ROOM_KEY_LEN, ROOM_KEY_PREFIX};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::collections::{HashSet, VecDeque};

/// Longest nickname, in bytes.
pub const MAX_NICK: usize = 32;
/// Longest message text, in bytes.
pub const MAX_TEXT: usize = 4096;
/// Plaintexts are padded to a multiple of this many bytes.
pub const PAD: usize = 256;
/// The sealed value's format.
const FORMAT: u8 = 1;
const NONCE: usize = 24;
const TAG: usize = 16;

const LOCATION_CONTEXT: &str = "chordal chat 2026-11 room location";
const KEY_CONTEXT: &str = "chordal chat 2026-11 room key";

/// One chat message as its sender wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Random; with the send time it makes the message's key unique.
    pub id: [u8; 16],
    /// Milliseconds since the Unix epoch, on the sender's clock.
    pub sent_at_ms: u64,
    pub nick: String,
    pub text: String,
}

/// Why a stored message could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a message key of this room")]
    OtherRoom,
    #[error("sealed with an unknown format or cut short")]
    Malformed,
    #[error("does not decrypt with this room's key (another passphrase, or tampered with)")]
    Forged,
    #[error("decrypts, but its contents are malformed")]
    BadContents,
}

/// Why a message cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a nickname is 1 to {MAX_NICK} bytes, not {0}")]
    Nick(usize),
    #[error("a message is at most {MAX_TEXT} bytes, not {0}")]
    Text(usize),
}

/// A room, as the clients in it know it.
#[derive(Clone)]
pub struct Room {
    location: [u8; 32],
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "Room({})", hex(&self.location[..8]))
    }
}

impl Room {
    /// The room called `name`, with `passphrase` if it has one. Rooms of
    /// the same name with different passphrases are different rooms.
    pub fn new(name: &str, passphrase: Option<&[u8]>) -> Room {
        // Length-prefixed, so that no (name, passphrase) pair can be made
        // to collide with another by moving bytes between them.
        let mut material = Vec::with_capacity(16 + name.len());
        material.extend_from_slice(&(name.len() as u64).to_be_bytes());
        material.extend_from_slice(name.as_bytes());
        match passphrase {
            Some(passphrase) => {
                material.push(1);
                material.extend_from_slice(passphrase);
            }
            None => material.push(0),
        }
        let location = blake3::derive_key(LOCATION_CONTEXT, &material);
        let key = blake3::derive_key(KEY_CONTEXT, &material);
        Room {
            location,
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Where the room lives: what the processes storing it see instead of
    /// its name.
    pub fn location(&self) -> &[u8; 32] {
        &self.location
    }

    /// The key `message` is stored under, and its sealed value.
    pub fn seal(&self, message: &Message) -> Result<(Vec<u8>, Vec<u8>), SealError> {
        let (nick, text) = (message.nick.as_bytes(), message.text.as_bytes());
        if nick.is_empty() || nick.len() > MAX_NICK {
            return Err(SealError::Nick(nick.len()));
        }
        if text.len() > MAX_TEXT {
            return Err(SealError::Text(text.len()));
        }
        let key = message_key(&self.location, message.sent_at_ms, &message.id);
        let mut plaintext = Vec::with_capacity(PAD + text.len());
        plaintext.push(nick.len() as u8);
        plaintext.extend_from_slice(nick);
        plaintext.extend_from_slice(&(text.len() as u16).to_be_bytes());
        plaintext.extend_from_slice(text);
        plaintext.resize(plaintext.len().div_ceil(PAD) * PAD, 0);
        let nonce: [u8; NONCE] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &key,
                },
            )
            .expect("sealing a bounded plaintext does not fail");
        let mut value = Vec::with_capacity(1 + NONCE + sealed.len());
        value.push(FORMAT);
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&sealed);
        Ok((key, value))
    }

    /// The message stored under `key` with `value`, if it is one of this
    /// room's and opens with its key.
    pub fn open(&self, key: &[u8], value: &[u8]) -> Result<Message, OpenError> {
        let (sent_at_ms, id) = match parse_key(key) {
            Some((location, sent_at_ms, id)) if location == self.location => (sent_at_ms, id),
            _ => return Err(OpenError::OtherRoom),
        };
        if value.len() < 1 + NONCE + TAG || value[0] != FORMAT {
            return Err(OpenError::Malformed);
        }
        let plaintext = self
            .cipher
            .decrypt(
                XNonce::from_slice(&value[1..1 + NONCE]),
                Payload {
                    msg: &value[1 + NONCE..],
                    aad: key,
                },
            )
            .map_err(|_| OpenError::Forged)?;
        let (nick, text) = parse_plaintext(&plaintext).ok_or(OpenError::BadContents)?;
        Ok(Message {
            id,
            sent_at_ms,
            nick,
            text,
        })
    }
}

/// The key of the message `id` sent at `sent_at_ms` in the room at
/// `location`. Keys of one room sort by send time.
pub fn message_key(location: &[u8; 32], sent_at_ms: u64, id: &[u8; 16]) -> Vec<u8> {
    let mut key = Vec::with_capacity(ROOM_KEY_LEN);
    key.extend_from_slice(ROOM_KEY_PREFIX);
    key.extend_from_slice(location);
    key.extend_from_slice(&sent_at_ms.to_be_bytes());
    key.extend_from_slice(id);
    key
}

/// A message key's room location, send time and message id.
pub fn parse_key(key: &[u8]) -> Option<([u8; 32], u64, [u8; 16])> {
    let (location, id) = split_room_key(key)?;
    let at = ROOM_KEY_PREFIX.len() + 32;
    let sent_at_ms = u64::from_be_bytes(key[at..at + 8].try_into().ok()?);
    Some((*location, sent_at_ms, *id))
}

fn parse_plaintext(plaintext: &[u8]) -> Option<(String, String)> {
    let (&nick_len, rest) = plaintext.split_first()?;
    let nick_len = usize::from(nick_len);
    if nick_len == 0 || nick_len > MAX_NICK || rest.len() < nick_len + 2 {
        return None;
    }
    let (nick, rest) = rest.split_at(nick_len);
    let text_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    if text_len > MAX_TEXT || rest.len() < text_len || rest[text_len..].iter().any(|&b| b != 0) {
        return None;
    }
    Some((
        String::from_utf8(nick.to_vec()).ok()?,
        String::from_utf8(rest[..text_len].to_vec()).ok()?,
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The most recent keys seen, up to a bound: what a watch has sent and
/// what a client has shown, so that nothing is sent or shown twice.
#[derive(Debug)]
pub struct RecentKeys {
    keys: HashSet<Vec<u8>>,
    order: VecDeque<Vec<u8>>,
    bound: usize,
}

impl Default for RecentKeys {
    fn default() -> RecentKeys {
        RecentKeys::new(16_384)
    }
}

impl RecentKeys {
    pub fn new(bound: usize) -> RecentKeys {
        RecentKeys {
            keys: HashSet::new(),
            order: VecDeque::new(),
            bound: bound.max(1),
        }
    }

    /// Whether `key` is new; remembers it, forgetting the oldest past the
    /// bound.
    pub fn insert(&mut self, key: &[u8]) -> bool {
        if self.keys.contains(key) {
            return false;
        }
        if self.order.len() == self.bound {
            if let Some(oldest) = self.order.pop_front() {
                self.keys.remove(&oldest);
            }
        }
        self.keys.insert(key.to_vec());
        self.order.push_back(key.to_vec());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use proptest::prelude::*;

    fn message(text: &str) -> Message {
        Message {
            id: rand::random(),
            sent_at_ms: 1_795_000_000_000,
            nick: "ada".into(),
            text: text.into(),
        }
    }

    proptest! {
        #[test]
        fn a_sealed_message_opens_to_itself_and_hides_its_words(
            nick in "[a-z]{1,32}", text in "\\PC{0,200}", sent_at_ms in any::<u64>(),
        ) {
            let room = Room::new("lobby", None);
            let message = Message { id: rand::random(), sent_at_ms, nick, text };
            let (key, value) = room.seal(&message).unwrap();
            prop_assert_eq!(room.open(&key, &value).unwrap(), message.clone());
            // Sizes come in steps of PAD; neither the name nor the words
            // appear in what is stored.
            prop_assert_eq!((value.len() - 1 - NONCE - TAG) % PAD, 0);
            for secret in [b"lobby".as_slice(), message.text.as_bytes()] {
                if secret.len() >= 4 {
                    prop_assert!(!key.windows(secret.len()).any(|w| w == secret));
                    prop_assert!(!value.windows(secret.len()).any(|w| w == secret));
                }
            }
        }
    }

    #[test]
    fn a_passphrase_makes_another_room_with_another_key() {
        let open = Room::new("ops", None);
        let closed = Room::new("ops", Some(b"hunter2"));
        let other = Room::new("ops", Some(b"hunter3"));
        assert_ne!(open.location(), closed.location());
        assert_ne!(closed.location(), other.location());
        // Moving bytes between name and passphrase makes another room.
        assert_ne!(
            Room::new("ab", Some(b"c")).location(),
            Room::new("a", Some(b"bc")).location()
        );
        let (key, value) = closed.seal(&message("the plan")).unwrap();
        assert_eq!(other.open(&key, &value), Err(OpenError::OtherRoom));
        // The same location with the wrong key (a forged key) fails to open.
        let wrong = Room {
            location: *closed.location(),
            cipher: XChaCha20Poly1305::new(&[7u8; 32].into()),
        };
        assert_eq!(wrong.open(&key, &value), Err(OpenError::Forged));
    }

    #[test]
    fn tampering_with_the_key_or_value_is_detected() {
        let room = Room::new("lobby", None);
        let original = message("hello");
        let (key, value) = room.seal(&original).unwrap();
        // Another time or id under the same room: the key is authenticated.
        let moved = message_key(room.location(), original.sent_at_ms + 1, &original.id);
        assert_eq!(room.open(&moved, &value), Err(OpenError::Forged));
        let mut flipped = value.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(room.open(&key, &flipped), Err(OpenError::Forged));
        assert_eq!(room.open(&key, &value[..20]), Err(OpenError::Malformed));
        assert_eq!(room.open(b"plain key", &value), Err(OpenError::OtherRoom));
    }

    #[test]
    fn oversized_nicknames_and_texts_are_refused() {
        let room = Room::new("lobby", None);
        let mut m = message("x");
        m.nick = "n".repeat(MAX_NICK + 1);
        assert_eq!(room.seal(&m), Err(SealError::Nick(MAX_NICK + 1)));
        m.nick = String::new();
        assert_eq!(room.seal(&m), Err(SealError::Nick(0)));
        let long = message(&"y".repeat(MAX_TEXT + 1));
        assert_eq!(room.seal(&long), Err(SealError::Text(MAX_TEXT + 1)));
        assert!(room.seal(&message(&"y".repeat(MAX_TEXT))).is_ok());
    }

    #[test]
    fn every_message_of_a_room_falls_in_the_rooms_id_range() {
        let room = Room::new("lobby", None);
        let (low, high) = Id::room_range(room.location());
        assert_eq!(high.0 - low.0, 0xffff);
        let ids: std::collections::BTreeSet<Id> = (0..200)
            .map(|i| {
                let (key, _) = room.seal(&message(&format!("m{i}"))).unwrap();
                let id = Id::of_key(&key);
                assert!(low <= id && id <= high);
                id
            })
            .collect();
        // Spread over the range, not piled on one id.
        assert!(ids.len() > 150);
        // Other keys keep their hash.
        assert_eq!(Id::of_key(b"lobby"), Id::from_hash(blake3::hash(b"lobby")));
    }

    #[test]
    fn recent_keys_are_reported_once_and_the_oldest_forgotten_past_the_bound() {
        let mut recent = RecentKeys::new(2);
        assert!(recent.insert(b"a"));
        assert!(!recent.insert(b"a"));
        assert!(recent.insert(b"b"));
        assert!(recent.insert(b"c"));
        // "a" was forgotten; "b" and "c" are still known.
        assert!(!recent.insert(b"c"));
        assert!(!recent.insert(b"b"));
        assert!(recent.insert(b"a"));
    }
}
