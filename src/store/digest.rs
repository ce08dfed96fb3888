//! The digest tree: a Merkle tree over the whole identifier circle, kept in
//! memory and updated in O(depth) on every write.
//!
//! The tree is a prefix tree with a fan-out of 16: the node at depth `d`
//! with prefix `p` covers the ids whose top `4d` bits are `p`. Each node's
//! [`Summary`] is the XOR of the [`record_digest`]s of the records under
//! it, and their number. XOR is what lets one tree serve every arc a
//! process holds, whatever the arcs are this minute: the summary of any
//! set of whole nodes is the XOR of theirs, so the summary of an arc's
//! part of a node is computed from the node's children without a tree of
//! its own (see [`crate::sync`]); and a write updates its leaf and the
//! leaf's ancestors by XORing the old record's digest out and the new
//! one's in, without reading anything else.
//!
//! Depths 0 to [`LEAF_DEPTH`] are stored: 1 + 16 + 256 + 4096 + 65,536
//! nodes of 24 bytes, 1.7 MB per process whatever it holds. Nodes below
//! the leaves exist only virtually: their summaries are computed by
//! scanning the store, which holds few records per leaf (about 15 per
//! million keys a process holds).
//!
//! Digests are 128-bit truncations of blake3: ample against accidental
//! collisions between the few million records of a replica. They are no
//! defence against a hostile member, which can store any record it likes
//! anyway (see REPLICATION.md).

use super::Record;
use crate::id::Id;
use std::sync::Mutex;

/// A record's digest, or the XOR of several.
pub type Digest = [u8; 16];

/// Bits of the id consumed per level.
pub const FANOUT_BITS: u32 = 4;
/// Children per node.
pub const FANOUT: u64 = 1 << FANOUT_BITS;
/// The deepest stored level: 16 bits of prefix, 65,536 leaves.
pub const LEAF_DEPTH: u8 = 4;
/// The deepest level at all: the whole 64-bit id.
pub const MAX_DEPTH: u8 = 16;

/// What a node holds: the XOR of its records' digests, and how many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub hash: Digest,
    pub count: u64,
}

impl Summary {
    /// Adds a record's digest (or another summary) to this one.
    pub fn add(&mut self, other: &Summary) {
        xor_into(&mut self.hash, &other.hash);
        self.count += other.count;
    }

    fn remove(&mut self, other: &Summary) {
        xor_into(&mut self.hash, &other.hash);
        self.count = self.count.saturating_sub(other.count);
    }

    /// The summary of one record.
    pub fn of(digest: Digest) -> Summary {
        Summary {
            hash: digest,
            count: 1,
        }
    }
}

fn xor_into(into: &mut Digest, other: &Digest) {
    for (a, b) in into.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// What identifies a record's content: blake3 of its key, version and
/// tombstone flag. Two replicas hold the same record exactly when their
/// digests agree (a version is made once, by one writer).
pub fn record_digest(key: &[u8], record: &Record) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(key.len() as u32).to_be_bytes());
    hasher.update(key);
    hasher.update(&record.version.clock.to_be_bytes());
    hasher.update(&record.version.writer.to_be_bytes());
    hasher.update(&[record.tombstone as u8]);
    let mut digest = [0; 16];
    digest.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    digest
}

/// A node of the prefix tree: the ids whose top `4 * depth` bits are
/// `prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePath {
    pub depth: u8,
    pub prefix: u64,
}

impl NodePath {
    /// The whole circle.
    pub const ROOT: NodePath = NodePath {
        depth: 0,
        prefix: 0,
    };

    /// Whether the path names a node at all (a message may carry anything).
    pub fn is_valid(&self) -> bool {
        self.depth <= MAX_DEPTH
            && (self.depth == MAX_DEPTH || self.prefix < 1u64 << (FANOUT_BITS * self.depth as u32))
    }

    /// The lowest and highest id under the node (inclusive).
    pub fn bounds(&self) -> (u64, u64) {
        if self.depth == 0 {
            return (0, u64::MAX);
        }
        let shift = 64 - FANOUT_BITS * self.depth as u32;
        let low = self.prefix << shift;
        let span = if shift == 0 { 0 } else { (1u64 << shift) - 1 };
        (low, low | span)
    }

    /// The 16 children, in ring order; none below [`MAX_DEPTH`].
    pub fn children(&self) -> impl Iterator<Item = NodePath> {
        let node = *self;
        let count = if node.depth < MAX_DEPTH { FANOUT } else { 0 };
        (0..count).map(move |digit| NodePath {
            depth: node.depth + 1,
            prefix: (node.prefix << FANOUT_BITS) | digit,
        })
    }

    /// The stored node at `depth` (at most [`LEAF_DEPTH`]) holding `id`.
    fn holding(id: Id, depth: u8) -> NodePath {
        let prefix = if depth == 0 {
            0
        } else {
            id.0 >> (64 - FANOUT_BITS * depth as u32)
        };
        NodePath { depth, prefix }
    }
}

/// The stored levels of the tree for every record of one store.
pub struct DigestTree {
    /// `levels[d][prefix]` for d in 0..=LEAF_DEPTH.
    levels: Mutex<Vec<Vec<Summary>>>,
}

impl Default for DigestTree {
    fn default() -> DigestTree {
        DigestTree::new()
    }
}

impl DigestTree {
    pub fn new() -> DigestTree {
        let levels = (0..=LEAF_DEPTH)
            .map(|depth| vec![Summary::default(); 1 << (FANOUT_BITS * depth as u32)])
            .collect();
        DigestTree {
            levels: Mutex::new(levels),
        }
    }

    /// Counts a new record with id `id` and digest `digest`.
    pub fn insert(&self, id: Id, digest: Digest) {
        let record = Summary::of(digest);
        let mut levels = self.levels.lock().expect("digest tree lock");
        for depth in 0..=LEAF_DEPTH {
            let node = NodePath::holding(id, depth);
            levels[depth as usize][node.prefix as usize].add(&record);
        }
    }

    /// Forgets a record counted before.
    pub fn remove(&self, id: Id, digest: Digest) {
        let record = Summary::of(digest);
        let mut levels = self.levels.lock().expect("digest tree lock");
        for depth in 0..=LEAF_DEPTH {
            let node = NodePath::holding(id, depth);
            levels[depth as usize][node.prefix as usize].remove(&record);
        }
    }

    /// The summaries of stored nodes (depth at most [`LEAF_DEPTH`]).
    pub fn stored(&self, nodes: impl IntoIterator<Item = NodePath>) -> Vec<Summary> {
        let levels = self.levels.lock().expect("digest tree lock");
        nodes
            .into_iter()
            .map(|node| {
                debug_assert!(node.depth <= LEAF_DEPTH && node.is_valid());
                levels[node.depth as usize][node.prefix as usize]
            })
            .collect()
    }

    /// Every record, summarized.
    pub fn root(&self) -> Summary {
        self.stored([NodePath::ROOT])[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Version;

    fn digest(n: u64) -> Digest {
        let record = Record::value(
            Version {
                clock: n,
                writer: 1,
            },
            vec![],
            None,
        );
        record_digest(&n.to_be_bytes(), &record)
    }

    #[test]
    fn paths_cover_the_circle_without_overlap() {
        assert_eq!(NodePath::ROOT.bounds(), (0, u64::MAX));
        let children: Vec<NodePath> = NodePath::ROOT.children().collect();
        assert_eq!(children.len(), 16);
        assert_eq!(children[0].bounds(), (0, (1 << 60) - 1));
        assert_eq!(children[15].bounds(), (15 << 60, u64::MAX));
        let deepest = NodePath {
            depth: MAX_DEPTH,
            prefix: 12345,
        };
        assert_eq!(deepest.bounds(), (12345, 12345));
        assert_eq!(deepest.children().count(), 0);
        assert!(deepest.is_valid());
        assert!(!NodePath {
            depth: 1,
            prefix: 16
        }
        .is_valid());
        assert!(!NodePath {
            depth: 17,
            prefix: 0
        }
        .is_valid());
        // Each child's range follows the previous one's.
        let leaf = NodePath {
            depth: 3,
            prefix: 0xabc,
        };
        let mut next = leaf.bounds().0;
        for child in leaf.children() {
            let (low, high) = child.bounds();
            assert_eq!(low, next);
            next = high.wrapping_add(1);
        }
        assert_eq!(next, leaf.bounds().1 + 1);
    }

    #[test]
    fn inserting_then_removing_leaves_the_tree_as_it_was() {
        let tree = DigestTree::new();
        let empty = tree.root();
        tree.insert(Id(5), digest(1));
        tree.insert(Id(u64::MAX), digest(2));
        assert_eq!(tree.root().count, 2);
        assert_ne!(tree.root().hash, empty.hash);
        tree.remove(Id(5), digest(1));
        tree.remove(Id(u64::MAX), digest(2));
        assert_eq!(tree.root(), empty);
    }

    #[test]
    fn a_node_sums_its_children() {
        let tree = DigestTree::new();
        for n in 0..500u64 {
            tree.insert(Id(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)), digest(n));
        }
        for node in [
            NodePath::ROOT,
            NodePath {
                depth: 2,
                prefix: 0x3f,
            },
        ] {
            let mut sum = Summary::default();
            for child in tree.stored(node.children()) {
                sum.add(&child);
            }
            assert_eq!(sum, tree.stored([node])[0]);
        }
        assert_eq!(tree.root().count, 500);
    }
}
