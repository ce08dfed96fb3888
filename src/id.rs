//! Ring identifiers and interval arithmetic on the identifier circle.
//! Depends on nothing in the crate.
//!
//! Every member of the ring and every key has a 64-bit identifier: the first
//! eight bytes of a blake3 hash, read big-endian. Identifiers live on a
//! circle of 2^64 points, so "between" is always meant clockwise, and an
//! interval whose two ends are equal is either empty or the whole circle
//! depending on which ends are open. The helpers here are the only place that
//! does this arithmetic; everything else asks them.
//!
//! Conventions (the same as the Chord paper's):
//!
//! * `between_open(a, x, b)` is `x ∈ (a, b)`. With `a == b` it is the whole
//!   circle except `a` itself, which is what a one-member ring needs: every
//!   other point lies strictly between a member and itself.
//! * `between_open_closed(a, x, b)` is `x ∈ (a, b]`. With `a == b` it is the
//!   whole circle: a lone member owns every key.

use std::fmt;

/// The first bytes of a chat room message's key: `ROOM_KEY_PREFIX`, the
/// room's 32-byte location, the message's send time (8 bytes, big-endian
/// milliseconds) and its 16-byte id. See `room`.
pub const ROOM_KEY_PREFIX: &[u8] = b"\0room\0";
/// The length of a room message's key.
pub const ROOM_KEY_LEN: usize = ROOM_KEY_PREFIX.len() + 32 + 8 + 16;

/// A room message's key split into the room's location and the message's
/// id; `None` for every other key.
pub fn split_room_key(key: &[u8]) -> Option<(&[u8; 32], &[u8; 16])> {
    if key.len() != ROOM_KEY_LEN || !key.starts_with(ROOM_KEY_PREFIX) {
        return None;
    }
    let rest = &key[ROOM_KEY_PREFIX.len()..];
    let location = rest[..32].try_into().ok()?;
    let message = rest[40..].try_into().ok()?;
    Some((location, message))
}

/// A point on the identifier circle.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub u64);

impl Id {
    /// Number of bits in an identifier, and so the number of fingers.
    pub const BITS: usize = 64;

    /// The identifier of an arbitrary byte string (a user key): blake3 of
    /// it, except for a room message's key ([`Id::of_room_message`]).
    pub fn of_key(key: &[u8]) -> Id {
        if let Some((location, message)) = split_room_key(key) {
            return Id::of_room_message(location, message);
        }
        Id::from_hash(blake3::hash(key))
    }

    /// The identifier of a message of the chat room at `location` (32
    /// bytes): the location's top 48 bits, then 16 bits of the message's
    /// id. A room's messages all fall in one range of 2^16 ids
    /// ([`Id::room_range`]), so one owner holds them, while the digest
    /// tree can still tell a busy room's messages apart.
    pub fn of_room_message(location: &[u8; 32], message_id: &[u8; 16]) -> Id {
        let (low, _) = Id::room_range(location);
        Id(low.0 | u64::from(u16::from_be_bytes([message_id[0], message_id[1]])))
    }

    /// The first and last identifiers of the room at `location`.
    pub fn room_range(location: &[u8; 32]) -> (Id, Id) {
        let top = u64::from_be_bytes(location[..8].try_into().expect("8 bytes")) & !0xffff;
        (Id(top), Id(top | 0xffff))
    }

    /// The identifier of virtual node `index` of the process reachable at
    /// `address`: `blake3(address, index)`.
    pub fn of_vnode(address: &str, index: u32) -> Id {
        let mut hasher = blake3::Hasher::new();
        hasher.update(address.as_bytes());
        hasher.update(&[0]);
        hasher.update(&index.to_be_bytes());
        Id::from_hash(hasher.finalize())
    }

    /// The identifier a hash names: its first eight bytes, big-endian.
    pub fn from_hash(hash: blake3::Hash) -> Id {
        let bytes: [u8; 8] = hash.as_bytes()[..8]
            .try_into()
            .expect("blake3 gives 32 bytes");
        Id(u64::from_be_bytes(bytes))
    }

    /// `self + 2^exponent` on the circle: the start of finger `exponent`.
    pub fn finger_start(self, exponent: usize) -> Id {
        Id(self.0.wrapping_add(1u64 << exponent))
    }

    /// The clockwise distance from `self` to `other`, in `[0, 2^64)`.
    pub fn distance_to(self, other: Id) -> u64 {
        other.0.wrapping_sub(self.0)
    }

    /// The point just after `self`.
    pub fn next(self) -> Id {
        Id(self.0.wrapping_add(1))
    }

    /// Big-endian bytes, so that byte order is ring order.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for Id {
    type Err = std::num::ParseIntError;

    fn from_str(text: &str) -> Result<Id, Self::Err> {
        u64::from_str_radix(text, 16).map(Id)
    }
}

/// `x ∈ (a, b)` clockwise. With `a == b`: every point but `a`.
pub fn between_open(a: Id, x: Id, b: Id) -> bool {
    if a == b {
        return x != a;
    }
    let span = a.distance_to(b);
    let offset = a.distance_to(x);
    offset != 0 && offset < span
}

/// `x ∈ (a, b]` clockwise. With `a == b`: the whole circle.
pub fn between_open_closed(a: Id, x: Id, b: Id) -> bool {
    if a == b {
        return true;
    }
    let offset = a.distance_to(x);
    offset != 0 && offset <= a.distance_to(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> impl Strategy<Value = Id> {
        // Bias towards the edges of the circle, where wrap-around bugs live.
        prop_oneof![
            any::<u64>().prop_map(Id),
            (0u64..4).prop_map(Id),
            (0u64..4).prop_map(|d| Id(u64::MAX - d)),
        ]
    }

    #[test]
    fn one_member_ring_owns_everything() {
        let a = Id(42);
        assert!(between_open_closed(a, Id(0), a));
        assert!(between_open_closed(a, a, a));
        assert!(between_open(a, Id(0), a));
        assert!(!between_open(a, a, a));
    }

    #[test]
    fn wrap_around_interval() {
        let a = Id(u64::MAX - 10);
        let b = Id(10);
        assert!(between_open(a, Id(u64::MAX), b));
        assert!(between_open(a, Id(0), b));
        assert!(between_open(a, Id(9), b));
        assert!(!between_open(a, Id(10), b));
        assert!(between_open_closed(a, Id(10), b));
        assert!(!between_open_closed(a, Id(11), b));
        assert!(!between_open_closed(a, a, b));
    }

    #[test]
    fn adjacent_points_have_an_empty_open_interval() {
        let a = Id(7);
        let b = Id(8);
        for x in [Id(6), Id(7), Id(8), Id(9), Id(0), Id(u64::MAX)] {
            assert!(
                !between_open(a, x, b),
                "{x:?} is not strictly between 7 and 8"
            );
        }
        assert!(between_open_closed(a, b, b));
    }

    #[test]
    fn finger_start_wraps() {
        assert_eq!(Id(u64::MAX).finger_start(0), Id(0));
        assert_eq!(Id(0).finger_start(63), Id(1 << 63));
        assert_eq!(Id(1 << 63).finger_start(63), Id(0));
    }

    #[test]
    fn hashes_are_stable() {
        // A change of hashing would move every key in every deployed ring.
        assert_eq!(Id::of_key(b""), Id(0xaf1349b9f5f9a1a6));
        assert_ne!(
            Id::of_vnode("127.0.0.1:10001", 0),
            Id::of_vnode("127.0.0.1:10001", 1)
        );
        assert_ne!(
            Id::of_vnode("127.0.0.1:1000", 11),
            Id::of_vnode("127.0.0.1:10001", 1)
        );
    }

    proptest! {
        #[test]
        fn closed_interval_is_open_interval_plus_end(a in id(), x in id(), b in id()) {
            prop_assume!(a != b);
            prop_assert_eq!(between_open_closed(a, x, b), between_open(a, x, b) || x == b);
        }

        #[test]
        fn a_point_splits_the_circle(a in id(), m in id(), b in id(), x in id()) {
            // For m strictly inside (a, b): (a, b] = (a, m] ⊎ (m, b].
            prop_assume!(between_open(a, m, b));
            let whole = between_open_closed(a, x, b);
            let left = between_open_closed(a, x, m);
            let right = between_open_closed(m, x, b);
            prop_assert_eq!(whole, left || right);
            prop_assert!(!(left && right));
        }

        #[test]
        fn complement_covers_the_circle(a in id(), b in id(), x in id()) {
            // (a, b] and (b, a] partition the circle when a != b.
            prop_assume!(a != b);
            prop_assert!(between_open_closed(a, x, b) ^ between_open_closed(b, x, a));
        }

        #[test]
        fn never_contains_its_open_end(a in id(), b in id()) {
            prop_assert!(!between_open(a, a, b));
            prop_assert!(!between_open(a, b, b));
        }

        #[test]
        fn matches_a_wide_integer_model(a in id(), x in id(), b in id()) {
            // Unroll the circle into u128 and compare with plain ordering.
            let unroll = |p: Id| if p.0 > a.0 { p.0 as u128 } else { p.0 as u128 + (1u128 << 64) };
            let (x_pos, b_pos) = (unroll(x), unroll(b));
            prop_assert_eq!(between_open_closed(a, x, b), x_pos <= b_pos);
            if a != b {
                prop_assert_eq!(between_open(a, x, b), x_pos < b_pos);
            }
        }
    }
}
