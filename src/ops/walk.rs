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
    walk_with(
        via,
        limit,
        |addr| async move { describe(&addr, timeout).await },
    )
    .await
}

/// [`walk_ring`], with `describe` asking a process to describe itself.
async fn walk_with<F, Fut>(via: &str, limit: usize, mut describe: F) -> Result<RingWalk>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<ProcessInfo>>,
{
    let mut processes: HashMap<String, ProcessInfo> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let first = describe(via.to_string()).await?;
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
            match describe(next.addr.clone()).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::NodeRef;
    use std::collections::BTreeMap;

    /// Processes as `Describe` would report them: each member with its
    /// first successor.
    fn processes(members: &[(u64, &str, u64, &str)]) -> BTreeMap<String, ProcessInfo> {
        let mut processes: BTreeMap<String, ProcessInfo> = BTreeMap::new();
        for (id, addr, next, next_addr) in members {
            let info = processes
                .entry(addr.to_string())
                .or_insert_with(|| ProcessInfo {
                    addr: addr.to_string(),
                    ..Default::default()
                });
            info.members.push(MemberInfo {
                me: NodeRef::new(Id(*id), *addr),
                joined: true,
                predecessor: None,
                successors: vec![NodeRef::new(Id(*next), *next_addr)],
                fingers: Vec::new(),
                owned_records: 0,
                replicas: Vec::new(),
            });
        }
        processes
    }

    async fn walk_of(members: &[(u64, &str, u64, &str)]) -> RingWalk {
        let processes = processes(members);
        walk_with("a:1", 100, |addr| {
            let found = processes
                .get(&addr)
                .cloned()
                .ok_or_else(|| Error::Unavailable(format!("{addr} does not answer")));
            async move { found }
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_whole_ring_closes_once_round_and_lists_members_from_the_lowest_id() {
        let walk = walk_of(&[
            (10, "a:1", 20, "b:1"),
            (20, "b:1", 30, "a:1"),
            (30, "a:1", 10, "a:1"),
        ])
        .await;
        assert!(walk.closed && walk.ordered, "{:?}", walk.problems);
        assert!(walk.problems.is_empty());
        let ids: Vec<u64> = walk.members.iter().map(|m| m.me.id.0).collect();
        assert_eq!(ids, vec![10, 20, 30]);
        assert_eq!(walk.processes, 2);
    }

    #[tokio::test]
    async fn a_ring_that_does_not_close_is_reported_with_where_it_broke() {
        // A successor that does not answer.
        let walk = walk_of(&[(10, "a:1", 20, "b:1"), (20, "b:1", 30, "c:1")]).await;
        assert!(!walk.closed && !walk.ordered);
        assert!(
            walk.problems[0].contains("cannot be reached"),
            "{:?}",
            walk.problems
        );
        // A successor its process does not have.
        let walk = walk_of(&[(10, "a:1", 20, "b:1"), (25, "b:1", 10, "a:1")]).await;
        assert!(!walk.closed);
        assert!(
            walk.problems[0].contains("not a member there"),
            "{:?}",
            walk.problems
        );
        // A loop that never comes back to the start.
        let walk = walk_of(&[
            (10, "a:1", 20, "b:1"),
            (20, "b:1", 30, "a:1"),
            (30, "a:1", 20, "b:1"),
        ])
        .await;
        assert!(!walk.closed);
        assert!(
            walk.problems[0].contains("loops back"),
            "{:?}",
            walk.problems
        );
    }

    #[tokio::test]
    async fn a_ring_that_goes_round_the_circle_twice_is_not_ordered() {
        // 10 -> 30 -> 20 -> 40 -> 10: closed, but twice round.
        let walk = walk_of(&[
            (10, "a:1", 30, "b:1"),
            (30, "b:1", 20, "a:1"),
            (20, "a:1", 40, "b:1"),
            (40, "b:1", 10, "a:1"),
        ])
        .await;
        assert!(walk.closed && !walk.ordered);
        assert!(
            walk.problems[0].contains("more than once"),
            "{:?}",
            walk.problems
        );
    }
}
