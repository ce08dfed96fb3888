//! Operator views of a running ring, built from the `Api` service.
//!
//! [`walk_ring`] starts at any process, and follows first successors member
//! by member, asking each process to `Describe` itself once, until it comes
//! back to where it started. What it finds is reported as it is: a ring that
//! does not close, or that goes round the circle more than once, is shown
//! with the problem spelled out rather than hidden.

use crate::data::{MemberInfo, ProcessInfo};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::rpc::ApiClient;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The ring as seen by walking successors.
#[derive(Clone, Debug)]
pub struct RingWalk {
    /// Members in ring order, starting from the lowest id.
    pub members: Vec<MemberInfo>,
    /// Distinct processes met.
    pub processes: usize,
    /// The walk came back to its start.
    pub closed: bool,
    /// The walk went round the identifier circle exactly once.
    pub ordered: bool,
    /// Anything that went wrong on the way, in words.
    pub problems: Vec<String>,
    /// What each process met said of itself, in the order met.
    pub process_info: Vec<ProcessInfo>,
}

/// Walks the ring starting at the process `via`. `limit` bounds the number
/// of members visited.
pub async fn walk_ring(via: &str, timeout: Duration, limit: usize) -> Result<RingWalk> {
    let mut processes: HashMap<String, ProcessInfo> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let first = describe(via, timeout).await?;
    let start = first
        .members
        .iter()
        .find(|m| m.joined)
        .cloned()
        .ok_or_else(|| Error::Unavailable(format!("{via} has not joined a ring yet")))?;
    order.push(first.addr.clone());
    processes.insert(first.addr.clone(), first);

    let mut members: Vec<MemberInfo> = Vec::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut problems = Vec::new();
    let mut closed = false;
    let mut current = start.clone();
    loop {
        seen.insert(current.me.id);
        members.push(current.clone());
        if members.len() >= limit {
            problems.push(format!("stopped after {limit} members"));
            break;
        }
        let Some(next) = current.successors.first().cloned() else {
            problems.push(format!("{} has no successor", current.me));
            break;
        };
        if next.id == start.me.id {
            closed = true;
            break;
        }
        if seen.contains(&next.id) {
            problems.push(format!(
                "the walk loops back to {next} without returning to {}",
                start.me
            ));
            break;
        }
        if !processes.contains_key(&next.addr) {
            match describe(&next.addr, timeout).await {
                Ok(info) => {
                    order.push(next.addr.clone());
                    processes.insert(next.addr.clone(), info);
                }
                Err(e) => {
                    problems.push(format!(
                        "{} names successor {next}, which cannot be reached: {e}",
                        current.me
                    ));
                    break;
                }
            }
        }
        match processes[&next.addr]
            .members
            .iter()
            .find(|m| m.me.id == next.id)
        {
            Some(member) if member.joined => current = member.clone(),
            _ => {
                problems.push(format!(
                    "{} names successor {next}, which is not a member there",
                    current.me
                ));
                break;
            }
        }
    }
    // Going round once means the clockwise gaps add up to the whole circle.
    let laps: u128 = members
        .iter()
        .enumerate()
        .map(|(index, member)| {
            let next = &members[(index + 1) % members.len()];
            match member.me.id.distance_to(next.me.id) {
                0 => 1u128 << 64,
                gap => gap as u128,
            }
        })
        .sum();
    let ordered = closed && laps == 1u128 << 64;
    if closed && !ordered {
        problems.push(
            "the successors go round the circle more than once: the ring is not ordered".into(),
        );
    }
    let lowest = members
        .iter()
        .enumerate()
        .min_by_key(|(_, m)| m.me.id)
        .map(|(i, _)| i)
        .unwrap_or(0);
    members.rotate_left(lowest);
    let process_count = members
        .iter()
        .map(|m| m.me.addr.as_str())
        .collect::<HashSet<_>>()
        .len();
    let process_info = order
        .iter()
        .filter_map(|addr| processes.remove(addr))
        .collect();
    Ok(RingWalk {
        members,
        processes: process_count,
        closed,
        ordered,
        problems,
        process_info,
    })
}

async fn describe(addr: &str, timeout: Duration) -> Result<ProcessInfo> {
    ApiClient::connect(addr, timeout).await?.describe().await
}
