//! Chordal: a peer-to-peer key-value store on a Chord ring that stays correct.
//!
//! The library is layered; a module uses only what is below it, and the
//! layer that decides defines the traits it needs, which the edge
//! implements (the test `tests/layers.rs` fails on any import that points
//! up). Bottom to top:
//!
//! * [`id`], [`clock`], [`error`]: identifiers on the 2^64 circle and
//!   interval arithmetic; time as an input; the one error type.
//! * [`ring`]: the corrected Chord protocol as a pure state machine.
//! * [`store`]: records laid out by ring position, on RocksDB or in memory,
//!   with the digest tree of everything held.
//! * [`sync`], [`replica`], [`room`]: the anti-entropy round as a state
//!   machine; preference lists, quorums and the hint store; chat rooms'
//!   sealing and onion layers.
//! * [`data`]: the data path (coordinator, quorums, hand-off, anti-entropy
//!   driving), reaching the ring and other processes through its `Router`
//!   and `Peers` traits; no network types.
//! * [`rpc`] and [`sim`]: the two implementations of those traits. `rpc`
//!   is the gRPC edge and the only module that sees protobuf; `sim` is a
//!   deterministic simulator of many hosts, with loss, delay, crashes and
//!   partitions, that runs the ring protocol and the shipped data path.
//! * [`node`]: one process's runtime: wiring, the ring task, one shutdown.
//! * [`ops`]: the admin port (metrics, dashboard), the ring walk, and the
//!   launcher of `chordal` processes.
//! * [`chat`], [`loadgen`]: the chat client and screen; the workload
//!   runner behind `chordal bench`.

pub mod chat;
pub mod clock;
pub mod data;
pub mod error;
pub mod id;
pub mod loadgen;
pub mod node;
pub mod ops;
pub mod replica;
pub mod ring;
pub mod room;
pub mod rpc;
pub mod sim;
pub mod store;
pub mod sync;

pub use error::{Error, Result};
