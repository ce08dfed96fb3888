//! Chordal: a peer-to-peer key-value store on a Chord ring that stays correct.
//!
//! The library is layered so that every protocol decision can be tested
//! without a network:
//!
//! * [`id`]: identifiers on the 2^64 circle and interval arithmetic.
//! * [`ring`]: the corrected Chord protocol as a pure state machine.
//! * [`sim`]: a deterministic simulator of many hosts, with loss, delay,
//!   crashes and partitions, and the checks of the ring's invariants.
//! * [`rpc`]: the gRPC edge; the only module that sees protobuf types.
//! * [`store`]: records laid out by ring position, on RocksDB or in memory.
//! * [`sync`]: the digest tree every store keeps, and the anti-entropy
//!   round that finds and repairs what two replicas disagree on.
//! * [`data`]: keys at their owners, routed requests, and the hand-off of
//!   arcs when members join and leave.
//! * [`replica`]: preference lists, quorums, and hints for replicas that
//!   could not be reached.
//! * [`chat`]: anonymous chat rooms, sealed end to end, on the store.
//! * [`loadgen`]: the workload runner behind `chordal bench`.
//! * [`node`]: the runtime that drives one process's state machine over
//!   the network.

pub mod admin;
pub mod chat;
pub mod dashboard;
pub mod data;
pub mod error;
pub mod id;
pub mod loadgen;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod ring;
pub mod rpc;
pub mod sim;
pub mod store;
pub mod sync;

pub use error::{Error, Result};
