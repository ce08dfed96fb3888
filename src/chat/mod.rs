//! The chat client: following a room live with failover, sending through
//! onion circuits ([`client`]), and the terminal screen ([`screen`]).
//!
//! Sits at the top of the library beside `loadgen`: it talks to nodes
//! only through the `rpc` client, and seals and opens messages with
//! [`crate::room`], which is all the storing nodes ever see of a room.

pub mod client;
pub mod screen;
