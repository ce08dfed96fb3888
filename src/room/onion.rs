//! Onion routing of chat messages: a client wraps each message in one
//! layer per relay, so the node that stores it learns only the address of
//! the last relay, and each relay only its neighbours on the path.
//!
//! Every process has a long-lived x25519 key pair (its *onion key*, kept
//! in its data directory and shown by `Describe`). For each message and
//! each relay the client makes a fresh ephemeral key pair, agrees a key
//! with the relay's onion key, and seals that relay's layer with
//! XChaCha20-Poly1305 under it:
//!
//! ```text
//! onion  = ephemeral public key (32) | nonce (24) | sealed layer
//! layer  = 1 | address length (1) | next relay's address | next onion
//!        | 2 | key length (2) | room message key | ttl ms (8) | sealed message
//! ```
//!
//! A relay opens its layer with its onion secret: a *forward* layer names
//! the next relay and carries the next onion, which it cannot open; a
//! *deliver* layer holds the room message (already sealed end to end with
//! the room's key), which the relay stores in the ring like any put. There
//! is no state on the relays: a *circuit* is the client's choice of three
//! relays, kept until one fails.

use crate::id::split_room_key;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use x25519_dalek::{PublicKey, StaticSecret};

const KEY_CONTEXT: &str = "chordal onion 2026-11 hop key";
const FORWARD: u8 = 1;
const DELIVER: u8 = 2;
const NONCE: usize = 24;
/// Most hops an onion may have.
pub const MAX_HOPS: usize = 8;
/// Largest onion a relay accepts: a room message of the longest text
/// through [`MAX_HOPS`] relays fits; the bound also caps how many hops one
/// onion can make relays do.
pub const MAX_ONION: usize = 16 * 1024;

/// A process's onion key pair.
#[derive(Clone)]
pub struct OnionKey {
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for OnionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnionKey(public {:02x?})", &self.public.as_bytes()[..4])
    }
}

impl OnionKey {
    pub fn from_secret(secret: [u8; 32]) -> OnionKey {
        let secret = StaticSecret::from(secret);
        OnionKey {
            public: PublicKey::from(&secret),
            secret,
        }
    }

    pub fn generate() -> OnionKey {
        OnionKey::from_secret(rand::random())
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    pub fn public(&self) -> [u8; 32] {
        *self.public.as_bytes()
    }

    /// Opens the outer layer of `onion`.
    pub fn peel(&self, onion: &[u8]) -> Result<Layer, PeelError> {
        if onion.len() > MAX_ONION {
            return Err(PeelError::TooLarge(onion.len()));
        }
        if onion.len() < 32 + NONCE + 16 + 1 {
            return Err(PeelError::Malformed("shorter than a layer"));
        }
        let ephemeral: [u8; 32] = onion[..32].try_into().expect("32 bytes");
        let ephemeral = PublicKey::from(ephemeral);
        let shared = self.secret.diffie_hellman(&ephemeral);
        if !shared.was_contributory() {
            return Err(PeelError::Malformed("a degenerate ephemeral key"));
        }
        let cipher = hop_cipher(
            shared.as_bytes(),
            ephemeral.as_bytes(),
            self.public.as_bytes(),
        );
        let layer = cipher
            .decrypt(
                XNonce::from_slice(&onion[32..32 + NONCE]),
                &onion[32 + NONCE..],
            )
            .map_err(|_| PeelError::NotForUs)?;
        Layer::decode(&layer)
    }
}

/// What a relay finds under its layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Pass `onion` on to the relay at `next`.
    Forward { next: String, onion: Vec<u8> },
    /// Store this room message in the ring, kept for `ttl_ms`.
    Deliver {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl_ms: u64,
    },
}

/// Why a relay refuses an onion.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeelError {
    #[error("an onion of {0} bytes is over the {MAX_ONION}-byte limit")]
    TooLarge(usize),
    #[error("malformed onion: {0}")]
    Malformed(&'static str),
    #[error("the onion's layer is not sealed for this relay's key")]
    NotForUs,
}

impl Layer {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Layer::Forward { next, onion } => {
                out.push(FORWARD);
                out.push(next.len() as u8);
                out.extend_from_slice(next.as_bytes());
                out.extend_from_slice(onion);
            }
            Layer::Deliver { key, value, ttl_ms } => {
                out.push(DELIVER);
                out.extend_from_slice(&(key.len() as u16).to_be_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&ttl_ms.to_be_bytes());
                out.extend_from_slice(value);
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Layer, PeelError> {
        let (&kind, rest) = bytes
            .split_first()
            .ok_or(PeelError::Malformed("empty layer"))?;
        match kind {
            FORWARD => {
                let (&len, rest) = rest
                    .split_first()
                    .ok_or(PeelError::Malformed("no address"))?;
                let len = usize::from(len);
                if rest.len() < len {
                    return Err(PeelError::Malformed("address cut short"));
                }
                let next = std::str::from_utf8(&rest[..len])
                    .map_err(|_| PeelError::Malformed("address is not text"))?;
                crate::ring::validate_addr(next)
                    .map_err(|_| PeelError::Malformed("not a HOST:PORT address"))?;
                Ok(Layer::Forward {
                    next: next.to_string(),
                    onion: rest[len..].to_vec(),
                })
            }
            DELIVER => {
                if rest.len() < 2 {
                    return Err(PeelError::Malformed("no key"));
                }
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let rest = &rest[2..];
                if rest.len() < len + 8 {
                    return Err(PeelError::Malformed("key cut short"));
                }
                let key = &rest[..len];
                // Relays store room messages only: an onion is not a way
                // to write anything else anonymously.
                if split_room_key(key).is_none() {
                    return Err(PeelError::Malformed("only room messages are delivered"));
                }
                let ttl_ms = u64::from_be_bytes(rest[len..len + 8].try_into().expect("8 bytes"));
                Ok(Layer::Deliver {
                    key: key.to_vec(),
                    value: rest[len + 8..].to_vec(),
                    ttl_ms,
                })
            }
            _ => Err(PeelError::Malformed("unknown layer kind")),
        }
    }
}

/// A relay on a circuit: its address and onion public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay {
    pub addr: String,
    pub key: [u8; 32],
}

/// Wraps the room message (`key`, sealed `value`) for `path`, first relay
/// first: the onion to hand to `path[0]`.
pub fn wrap(path: &[Relay], key: &[u8], value: &[u8], ttl_ms: u64) -> Vec<u8> {
    assert!(
        !path.is_empty() && path.len() <= MAX_HOPS,
        "1 to {MAX_HOPS} relays"
    );
    let mut layer = Layer::Deliver {
        key: key.to_vec(),
        value: value.to_vec(),
        ttl_ms,
    };
    // Innermost first: each relay's layer names the relay after it.
    let (first, rest) = path.split_first().expect("at least one relay");
    for relay in rest.iter().rev() {
        layer = Layer::Forward {
            next: relay.addr.clone(),
            onion: seal_for(relay, &layer.encode()),
        };
    }
    seal_for(first, &layer.encode())
}

fn seal_for(relay: &Relay, layer: &[u8]) -> Vec<u8> {
    let ephemeral = StaticSecret::from(rand::random::<[u8; 32]>());
    let ephemeral_public = PublicKey::from(&ephemeral);
    let shared = ephemeral.diffie_hellman(&PublicKey::from(relay.key));
    let cipher = hop_cipher(shared.as_bytes(), ephemeral_public.as_bytes(), &relay.key);
    let nonce: [u8; NONCE] = rand::random();
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), layer)
        .expect("sealing a bounded layer does not fail");
    let mut onion = Vec::with_capacity(32 + NONCE + sealed.len());
    onion.extend_from_slice(ephemeral_public.as_bytes());
    onion.extend_from_slice(&nonce);
    onion.extend_from_slice(&sealed);
    onion
}

/// The key of one hop: the shared secret bound to both public keys.
fn hop_cipher(shared: &[u8; 32], ephemeral: &[u8; 32], relay: &[u8; 32]) -> XChaCha20Poly1305 {
    let mut material = Vec::with_capacity(96);
    material.extend_from_slice(shared);
    material.extend_from_slice(ephemeral);
    material.extend_from_slice(relay);
    XChaCha20Poly1305::new(&blake3::derive_key(KEY_CONTEXT, &material).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{Message, Room};

    fn relays(n: usize) -> (Vec<OnionKey>, Vec<Relay>) {
        let keys: Vec<OnionKey> = (0..n).map(|_| OnionKey::generate()).collect();
        let path = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Relay {
                addr: format!("127.0.0.1:{}", 20000 + i),
                key: k.public(),
            })
            .collect();
        (keys, path)
    }

    fn room_message() -> (Vec<u8>, Vec<u8>) {
        Room::new("lobby", None)
            .seal(&Message {
                id: [3; 16],
                sent_at_ms: 1,
                nick: "ada".into(),
                text: "a secret".into(),
            })
            .unwrap()
    }

    #[test]
    fn each_relay_learns_only_the_next_hop_and_the_last_the_sealed_message() {
        let (keys, path) = relays(3);
        let (key, value) = room_message();
        let mut onion = wrap(&path, &key, &value, 60_000);
        for (at, relay_key) in keys.iter().enumerate() {
            // Only the relay the layer is for can open it.
            for (other, other_key) in keys.iter().enumerate() {
                if other != at {
                    assert_eq!(other_key.peel(&onion), Err(PeelError::NotForUs));
                }
            }
            match relay_key.peel(&onion).unwrap() {
                Layer::Forward { next, onion: inner } => {
                    assert!(at < 2);
                    assert_eq!(next, path[at + 1].addr);
                    // Neither the room message nor anything of it shows.
                    assert!(!inner.windows(8).any(|w| w == &value[..8]));
                    onion = inner;
                }
                Layer::Deliver {
                    key: k,
                    value: v,
                    ttl_ms,
                } => {
                    assert_eq!(at, 2);
                    assert_eq!((k, v, ttl_ms), (key.clone(), value.clone(), 60_000));
                }
            }
        }
    }

    #[test]
    fn tampered_foreign_and_hostile_onions_are_refused() {
        let (keys, path) = relays(1);
        let (key, value) = room_message();
        let mut onion = wrap(&path, &key, &value, 1);
        let last = onion.len() - 1;
        onion[last] ^= 1;
        assert_eq!(keys[0].peel(&onion), Err(PeelError::NotForUs));
        assert!(matches!(
            keys[0].peel(&[0; 10]),
            Err(PeelError::Malformed(_))
        ));
        assert!(matches!(
            keys[0].peel(&vec![0; MAX_ONION + 1]),
            Err(PeelError::TooLarge(_))
        ));
        // An all-zero ephemeral key makes no shared secret.
        assert!(matches!(
            keys[0].peel(&[0; 200]),
            Err(PeelError::Malformed(_))
        ));
        // A deliver layer for anything but a room message.
        let plain = seal_for(
            &path[0],
            &Layer::Deliver {
                key: b"plain".to_vec(),
                value: vec![1],
                ttl_ms: 0,
            }
            .encode(),
        );
        assert!(matches!(keys[0].peel(&plain), Err(PeelError::Malformed(_))));
        // A forward layer naming no address.
        let bad = seal_for(
            &path[0],
            &Layer::Forward {
                next: "no port".into(),
                onion: vec![],
            }
            .encode(),
        );
        assert!(matches!(keys[0].peel(&bad), Err(PeelError::Malformed(_))));
    }
}
