//! The messages ring members exchange, as plain domain types.
//!
//! These are what the protocol state machine speaks. The `rpc` module maps
//! them to and from protobuf at the network edge; the simulator moves them
//! between in-process hosts without any encoding at all.

use crate::id::Id;
use std::fmt;

/// A network address (`host:port`) of a process. Virtual nodes of one process
/// share it.
pub type Addr = String;

/// Longest accepted `host:port` address, in bytes.
pub const MAX_ADDR_LEN: usize = 255;

/// Checks that `addr` looks like `host:port`: bounded, printable, no spaces,
/// a numeric port.
pub fn validate_addr(addr: &str) -> Result<(), String> {
    if addr.is_empty() || addr.len() > MAX_ADDR_LEN {
        return Err(format!("address must be 1 to {MAX_ADDR_LEN} bytes long"));
    }
    if !addr.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("address must be printable ASCII without spaces".into());
    }
    let (host, port) = addr.rsplit_once(':').ok_or("address must be host:port")?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "address {addr:?} must be host:port with a numeric port"
        ));
    }
    Ok(())
}

/// A ring member as others see it: its identifier and the address of the
/// process hosting it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeRef {
    pub id: Id,
    pub addr: Addr,
}

impl NodeRef {
    pub fn new(id: Id, addr: impl Into<Addr>) -> NodeRef {
        NodeRef {
            id,
            addr: addr.into(),
        }
    }
}

impl fmt::Debug for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

/// Identifies one request so its answer can find the operation awaiting it.
pub type RequestId = u64;

/// A request from one host to another. Requests that name a `member` are for
/// one virtual node; `FindStep` is for the whole process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Liveness: is this member alive and part of the ring? Answered at once,
    /// whatever else the member is doing.
    Ping,
    /// Your predecessor and successor list, please.
    GetState,
    /// "I believe I am your predecessor" (Zave's rectify trigger).
    Notify { from: NodeRef },
    /// `leaving` is departing the ring gracefully; forget it.
    Leaving { leaving: NodeRef },
    /// One step of an iterative lookup for `target`.
    FindStep { target: Id },
}

impl Request {
    /// Whether the request is addressed to a single member.
    pub fn is_for_member(&self) -> bool {
        !matches!(self, Request::FindStep { .. })
    }
}

/// An answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The member is alive and in the ring.
    Pong,
    /// A member's predecessor and successor list.
    State {
        predecessor: Option<NodeRef>,
        successors: Vec<NodeRef>,
    },
    /// The member is between sending a state-changing query and applying its
    /// answer; ask again later. Not a sign of failure.
    Pending,
    /// No joined member with that identifier lives here (never did, has not
    /// joined yet, or is leaving).
    NotMember,
    /// The request was taken.
    Ack,
    /// The answering process holds `predecessor`, the member that precedes
    /// the target; `successors` is its successor list, whose first live entry
    /// owns the target.
    Found {
        predecessor: NodeRef,
        successors: Vec<NodeRef>,
    },
    /// The answering process knows these members, closest preceding the
    /// target first; ask one of them next.
    Closer { candidates: Vec<NodeRef> },
}

/// A request leaving a host, with where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub id: RequestId,
    pub to: Addr,
    /// The member addressed, for member requests.
    pub member: Option<Id>,
    pub request: Request,
}
