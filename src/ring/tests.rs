//! Unit tests of single protocol rules, with hosts wired together by hand.
//! Whole-ring behaviour under loss, crashes and partitions is tested in the
//! simulator (`tests/simulation.rs`).

use super::*;
use std::collections::BTreeMap;

fn node(id: u64, addr: &str) -> NodeRef {
    NodeRef::new(Id(id), addr)
}

fn config(r: usize) -> Config {
    Config {
        successors: r,
        ..Config::default()
    }
}

/// What [`pump`] saw go by.
#[derive(Default)]
struct Traffic {
    /// Lookups that finished, with their tokens.
    done: Vec<(u64, Result<LookupOutcome, LookupError>)>,
    /// Every request sent from one host to another.
    sent: Vec<Outgoing>,
    /// Every notice, with the address of the host that gave it.
    notices: Vec<(String, Notice)>,
}

impl Traffic {
    /// How many `request`s went to the process at `to`.
    fn sent_to(&self, to: &str, request: &Request) -> usize {
        self.sent
            .iter()
            .filter(|out| out.to == to && out.request == *request)
            .count()
    }
}

/// Delivers every request between `hosts` instantly until all is quiet; a
/// request to an address with no host fails, as to a crashed process.
fn pump(hosts: &mut BTreeMap<String, Host>) -> Traffic {
    let mut traffic = Traffic::default();
    loop {
        let mut outgoing = Vec::new();
        for (addr, host) in hosts.iter_mut() {
            for action in host.take_actions() {
                match action {
                    Action::Send(message) => outgoing.push((addr.clone(), message)),
                    Action::LookupDone { token, result } => traffic.done.push((token, result)),
                    Action::Notice(notice) => traffic.notices.push((addr.clone(), notice)),
                }
            }
        }
        if outgoing.is_empty() {
            return traffic;
        }
        for (from, message) in outgoing {
            traffic.sent.push(message.clone());
            let input = match hosts.get_mut(&message.to) {
                Some(host) => Input::Reply {
                    id: message.id,
                    response: host.handle_request(message.member, message.request),
                },
                None => Input::Failed { id: message.id },
            };
            hosts.get_mut(&from).expect("sender").step(input);
        }
    }
}

/// One stabilize tick of the host at `addr`, and everything it sets off.
fn stabilize(hosts: &mut BTreeMap<String, Host>, addr: &str) -> Traffic {
    hosts
        .get_mut(addr)
        .expect("host")
        .step(Input::StabilizeTick);
    pump(hosts)
}

/// Hosts of one member each, every one bootstrapping through the first
/// (which so starts the ring), after `rounds` rounds of ticks.
fn ring_of(members: &[(&str, u64)], rounds: usize) -> BTreeMap<String, Host> {
    let seed = vec![members[0].0.to_string()];
    let mut hosts: BTreeMap<String, Host> = members
        .iter()
        .map(|&(addr, id)| {
            (
                addr.to_string(),
                Host::new(addr, &[Id(id)], &seed, config(3)),
            )
        })
        .collect();
    tick(&mut hosts, rounds);
    hosts
}

fn tick(hosts: &mut BTreeMap<String, Host>, rounds: usize) {
    for _ in 0..rounds {
        let addrs: Vec<String> = hosts.keys().cloned().collect();
        for addr in addrs {
            hosts
                .get_mut(&addr)
                .expect("host")
                .step(Input::StabilizeTick);
            pump(hosts);
            hosts
                .get_mut(&addr)
                .expect("host")
                .step(Input::FixFingersTick);
            pump(hosts);
        }
    }
}

#[test]
fn successor_list_is_cut_to_r() {
    let me = node(0, "me");
    let tail = [node(2, "b"), node(3, "c"), node(4, "d")];
    let list = successor_list(&me, &node(1, "a"), &tail, 3);
    assert_eq!(list, vec![node(1, "a"), node(2, "b"), node(3, "c")]);
}

#[test]
fn successor_list_stops_where_the_ring_comes_round_to_me() {
    let me = node(0, "me");
    let tail = [node(2, "b"), node(0, "me"), node(1, "a")];
    let list = successor_list(&me, &node(1, "a"), &tail, 8);
    assert_eq!(list, vec![node(1, "a"), node(2, "b"), node(0, "me")]);
}

#[test]
fn successor_list_stops_where_it_repeats() {
    // A newcomer copying the list of the lone member of a ring.
    let me = node(5, "me");
    let list = successor_list(&me, &node(1, "a"), &[node(1, "a")], 4);
    assert_eq!(list, vec![node(1, "a")]);
}

#[test]
fn a_host_seeded_by_itself_creates_a_ring() {
    let mut host = Host::new("a:1", &[Id(100)], &["a:1".to_string()], config(3));
    host.step(Input::StabilizeTick);
    let member = &host.members()[0];
    assert!(member.is_joined());
    assert_eq!(member.successors(), &[node(100, "a:1")]);
    assert!(host
        .take_actions()
        .iter()
        .any(|a| matches!(a, Action::Notice(Notice::Created { .. }))));
}

#[test]
fn virtual_nodes_of_one_host_form_a_ring_without_the_network() {
    let ids = [Id(10), Id(20), Id(30)];
    let mut host = Host::new("a:1", &ids, &[], config(3));
    for _ in 0..4 {
        host.step(Input::StabilizeTick);
    }
    assert!(
        host.take_actions()
            .iter()
            .all(|a| !matches!(a, Action::Send(_))),
        "all traffic was local"
    );
    let successor_of = |id: u64| host.member(Id(id)).unwrap().successor().unwrap().id;
    assert_eq!(successor_of(10), Id(20));
    assert_eq!(successor_of(20), Id(30));
    assert_eq!(successor_of(30), Id(10));
    assert_eq!(
        host.member(Id(10)).unwrap().predecessor().map(|p| p.id),
        Some(Id(30))
    );
}

#[test]
fn two_hosts_join_and_link_both_ways() {
    let hosts = ring_of(&[("a:1", 100), ("b:1", 200)], 3);
    let a = hosts["a:1"].member(Id(100)).unwrap();
    let b = hosts["b:1"].member(Id(200)).unwrap();
    assert_eq!(a.successors(), &[node(200, "b:1"), node(100, "a:1")]);
    assert_eq!(b.successors(), &[node(100, "a:1"), node(200, "b:1")]);
    assert_eq!(a.predecessor(), Some(&node(200, "b:1")));
    assert_eq!(b.predecessor(), Some(&node(100, "a:1")));
}

#[test]
fn a_busy_member_answers_pending_but_still_answers_ping() {
    let mut hosts = ring_of(&[("a:1", 100), ("b:1", 200)], 3);
    // b starts stabilizing and its query to a is left in flight.
    let b = hosts.get_mut("b:1").unwrap();
    b.step(Input::StabilizeTick);
    let sent = b.take_actions();
    assert!(sent.iter().any(|a| matches!(
        a,
        Action::Send(Outgoing {
            request: Request::GetState,
            ..
        })
    )));
    assert_eq!(
        b.handle_request(Some(Id(200)), Request::GetState),
        Response::Pending
    );
    assert_eq!(
        b.handle_request(Some(Id(200)), Request::Ping),
        Response::Pong
    );
}

#[test]
fn rectify_keeps_a_live_predecessor_and_replaces_a_dead_one() {
    let mut host = Host::new("a:1", &[Id(100)], &[], config(3));
    host.step(Input::StabilizeTick);
    host.handle_request(
        Some(Id(100)),
        Request::Notify {
            from: node(50, "p:1"),
        },
    );
    assert_eq!(
        host.member(Id(100)).unwrap().predecessor(),
        Some(&node(50, "p:1"))
    );

    // 40 is not between 50 and 100: ping 50 first.
    host.take_actions();
    host.handle_request(
        Some(Id(100)),
        Request::Notify {
            from: node(40, "q:1"),
        },
    );
    let ping = host.take_actions().into_iter().find_map(|a| match a {
        Action::Send(out) if out.request == Request::Ping => Some(out),
        _ => None,
    });
    let ping = ping.expect("the current predecessor is pinged");
    assert_eq!(ping.member, Some(Id(50)));
    host.step(Input::Reply {
        id: ping.id,
        response: Response::Pong,
    });
    assert_eq!(
        host.member(Id(100)).unwrap().predecessor(),
        Some(&node(50, "p:1")),
        "alive: kept"
    );

    host.handle_request(
        Some(Id(100)),
        Request::Notify {
            from: node(40, "q:1"),
        },
    );
    let mut pings = 0;
    loop {
        let ping = host.take_actions().into_iter().find_map(|a| match a {
            Action::Send(out) if out.request == Request::Ping => Some(out.id),
            _ => None,
        });
        let Some(id) = ping else { break };
        pings += 1;
        host.step(Input::Failed { id });
    }
    assert_eq!(
        pings,
        Config::default().query_attempts,
        "a lost ping is retried before presuming death"
    );
    assert_eq!(
        host.member(Id(100)).unwrap().predecessor(),
        Some(&node(40, "q:1")),
        "dead: replaced"
    );
}

#[test]
fn lookups_route_through_remote_tables() {
    let addrs: Vec<String> = (0..8).map(|i| format!("h{i}:1")).collect();
    let members: Vec<(&str, u64)> = (0..8)
        .map(|i| (addrs[i].as_str(), (i as u64 + 1) << 60))
        .collect();
    let mut hosts = ring_of(&members, 12);
    // Key just after the member with id 5 << 60 belongs to 6 << 60 (h5).
    hosts
        .get_mut("h0:1")
        .unwrap()
        .start_lookup(Id((5 << 60) + 1), 7);
    let done = pump(&mut hosts).done;
    let (token, result) = &done[0];
    assert_eq!(*token, 7);
    let outcome = result.as_ref().expect("found");
    assert_eq!(outcome.owner(), &node(6 << 60, "h5:1"));
    assert_eq!(outcome.predecessor, node(5 << 60, "h4:1"));
}

#[test]
fn a_join_with_no_reachable_seed_backs_off() {
    let mut host = Host::new("b:1", &[Id(200)], &["a:1".to_string()], config(3));
    let mut hosts = BTreeMap::new();
    host.step(Input::StabilizeTick);
    hosts.insert("b:1".to_string(), host);
    // a:1 does not exist: every request to it fails.
    let mut waits = Vec::new();
    for _ in 0..20 {
        let host = hosts.get_mut("b:1").unwrap();
        let actions = host.take_actions();
        for action in &actions {
            if let Action::Notice(Notice::JoinFailed { retry_in_ticks, .. }) = action {
                waits.push(*retry_in_ticks);
            }
        }
        for action in actions {
            if let Action::Send(out) = action {
                host.step(Input::Failed { id: out.id });
            }
        }
        host.step(Input::StabilizeTick);
    }
    assert!(
        !hosts["b:1"].members()[0].is_joined(),
        "never joins a ring it cannot reach"
    );
    assert_eq!(&waits[..3], &[2, 4, 8], "waits double");
}

#[test]
fn successor_list_never_passes_over_me() {
    // A stale head whose list runs past the member: keep only the part
    // before the member.
    let me = node(50, "me");
    let tail = [node(10, "b"), node(40, "c"), node(60, "d"), node(70, "e")];
    let list = successor_list(&me, &node(5, "a"), &tail, 8);
    assert_eq!(list, vec![node(5, "a"), node(10, "b"), node(40, "c")]);
}

#[test]
fn successor_list_stops_where_a_stale_list_goes_backwards() {
    let me = node(0, "me");
    let tail = [node(30, "b"), node(20, "c")];
    assert_eq!(
        successor_list(&me, &node(10, "a"), &tail, 8),
        vec![node(10, "a"), node(30, "b")]
    );
}

#[test]
fn only_a_neighbour_can_announce_its_own_departure() {
    let mut hosts = ring_of(&[("a:1", 100), ("b:1", 200), ("c:1", 300)], 6);
    let a = hosts.get_mut("a:1").unwrap();
    let before = a.member(Id(100)).unwrap().clone();
    // A stranger, and a neighbour's id with the wrong address, change nothing.
    a.handle_request(
        Some(Id(100)),
        Request::Leaving {
            leaving: node(250, "x:1"),
        },
    );
    a.handle_request(
        Some(Id(100)),
        Request::Leaving {
            leaving: node(200, "evil:1"),
        },
    );
    let after = a.member(Id(100)).unwrap();
    assert_eq!(before.successors(), after.successors());
    assert_eq!(before.predecessor(), after.predecessor());
    // The real successor leaving is dropped at once.
    a.handle_request(
        Some(Id(100)),
        Request::Leaving {
            leaving: node(200, "b:1"),
        },
    );
    assert!(a
        .member(Id(100))
        .unwrap()
        .successors()
        .iter()
        .all(|s| s.id != Id(200)));
    // The predecessor leaving is dropped too, and a notification it sent
    // just before it left, arriving after, does not bring it back.
    let c = hosts.get_mut("c:1").unwrap();
    c.handle_request(
        Some(Id(300)),
        Request::Leaving {
            leaving: node(200, "b:1"),
        },
    );
    assert_eq!(c.member(Id(300)).unwrap().predecessor(), None);
    c.handle_request(
        Some(Id(300)),
        Request::Notify {
            from: node(200, "b:1"),
        },
    );
    assert_eq!(c.member(Id(300)).unwrap().predecessor(), None);
}

#[test]
fn members_presumed_dead_are_pinged_one_per_tick_for_1200_ticks_and_at_most_64_are_kept() {
    let mut host = Host::new("a:1", &[Id(1)], &["a:1".to_string()], config(3));
    host.take_actions();
    for i in 0..70 {
        host.remember_lost(&node(1_000 + i, &format!("10.0.0.{i}:1")));
    }
    assert_eq!(host.lost.len(), 64);
    assert!(
        host.lost.iter().all(|l| l.node.id.0 >= 1_006),
        "the oldest six are the ones forgotten"
    );
    let mut pinged: BTreeMap<String, u32> = BTreeMap::new();
    for tick in 1..1200 {
        host.probe_lost();
        let pings: Vec<String> = host
            .take_actions()
            .into_iter()
            .filter_map(|action| match action {
                Action::Send(message) if message.request == Request::Ping => Some(message.to),
                _ => None,
            })
            .collect();
        assert_eq!(pings.len(), 1, "tick {tick}: {pings:?}");
        *pinged.entry(pings[0].clone()).or_default() += 1;
    }
    assert_eq!(host.lost.len(), 64, "still probed on tick 1199");
    assert_eq!(pinged.len(), 64, "each in turn");
    assert!(pinged.values().all(|n| (18..=19).contains(n)), "{pinged:?}");
    host.probe_lost();
    assert!(host.lost.is_empty(), "forgotten after 1200 ticks");
    // A member of this host is never remembered as lost.
    host.remember_lost(&node(1, "a:1"));
    assert!(host.lost.is_empty());
}

#[test]
fn a_find_step_names_the_three_closest_preceding_entries_one_per_process() {
    let mut host = Host::new("a:1", &[Id(1_000)], &["a:1".to_string()], Config::default());
    host.step(Input::StabilizeTick);
    host.take_actions();
    let member = &mut host.members[0];
    member.successors = vec![node(2_000, "b:1")];
    let entries = [
        (3_000, "c:1"),
        (4_000, "c:1"),
        (5_000, "d:1"),
        (6_000, "e:1"),
        (7_000, "f:1"),
        (8_000, "f:1"),
        (9_000, "g:1"),
        (9_500, "a:1"),
        (11_000, "h:1"),
    ];
    for (slot, (id, addr)) in member.fingers.iter_mut().zip(entries) {
        *slot = Some(node(id, addr));
    }
    let Response::Closer { candidates } = host.find_step(Id(10_000)) else {
        panic!("the target is not in this process's arcs");
    };
    // Not this process's own entry (9,500), not past the target (11,000),
    // and only the closest of f's two.
    assert_eq!(
        candidates,
        vec![node(9_000, "g:1"), node(8_000, "f:1"), node(6_000, "e:1")]
    );
    // A target in the member's arc is answered with its successors.
    assert_eq!(
        host.find_step(Id(1_500)),
        Response::Found {
            predecessor: node(1_000, "a:1"),
            successors: vec![node(2_000, "b:1")],
        }
    );
}

#[test]
fn a_member_whose_list_came_round_to_it_and_hears_from_nobody_is_alone() {
    let mut hosts = ring_of(&[("a:1", 100), ("b:1", 200)], 3);
    let a = hosts.get_mut("a:1").unwrap();
    assert_eq!(
        a.member(Id(100)).unwrap().successors(),
        &[node(200, "b:1"), node(100, "a:1")],
        "a's own list says the ring comes round to it after b"
    );
    // A finger still names a member that has since gone, so recovery has
    // someone to ask besides the dead successor.
    a.members[0].fingers[0] = Some(node(150, "x:1"));
    hosts.remove("b:1");

    let traffic = stabilize(&mut hosts, "a:1");
    assert_eq!(
        traffic.sent_to("b:1", &Request::GetState),
        Config::default().query_attempts as usize,
        "the successor gets its tries"
    );
    assert_eq!(
        traffic.sent_to("x:1", &Request::GetState),
        Config::default().query_attempts as usize,
        "before concluding it is alone, a asks the other member it knows"
    );
    let a = hosts["a:1"].member(Id(100)).unwrap();
    assert!(a.is_joined(), "alone, not out of the ring");
    assert_eq!(a.successors(), &[node(100, "a:1")]);
    assert!(traffic
        .notices
        .iter()
        .all(|(_, n)| !matches!(n, Notice::Orphaned { .. })));
}

#[test]
fn a_member_that_hears_from_nobody_leaves_and_rejoins_through_its_bootstrap() {
    let hosts = [
        ("s:1", 100),
        ("a:1", 200),
        ("b:1", 300),
        ("c:1", 400),
        ("d:1", 500),
    ];
    let mut hosts = ring_of(&hosts, 8);
    assert_eq!(
        hosts["a:1"].member(Id(200)).unwrap().successors(),
        &[node(300, "b:1"), node(400, "c:1"), node(500, "d:1")]
    );
    // Everyone else dies: a's whole list, and the bootstrap s, which a
    // knows as its predecessor.
    for dead in ["s:1", "b:1", "c:1", "d:1"] {
        hosts.remove(dead);
    }

    let traffic = stabilize(&mut hosts, "a:1");
    let tries = Config::default().query_attempts as usize;
    for dead in ["b:1", "c:1", "d:1", "s:1"] {
        assert_eq!(traffic.sent_to(dead, &Request::GetState), tries, "{dead}");
    }
    let a = hosts["a:1"].member(Id(200)).unwrap();
    assert!(
        !a.is_joined(),
        "its list never said it was alone: it leaves"
    );
    assert!(a.successors().is_empty() && a.predecessor().is_none());
    assert!(traffic
        .notices
        .iter()
        .any(|(_, n)| *n == Notice::Orphaned { member: Id(200) }));

    // It rejoins through its bootstrap, and keeps trying while it is down.
    let traffic = stabilize(&mut hosts, "a:1");
    let find_step = Request::FindStep { target: Id(200) };
    assert_eq!(traffic.sent_to("s:1", &find_step), 1);
    assert!(!hosts["a:1"].members()[0].is_joined());

    // The bootstrap comes back with an empty state and starts a ring; a
    // joins it.
    hosts.insert(
        "s:1".to_string(),
        Host::new("s:1", &[Id(100)], &["s:1".to_string()], config(3)),
    );
    tick(&mut hosts, 6);
    let a = hosts["a:1"].member(Id(200)).unwrap();
    let s = hosts["s:1"].member(Id(100)).unwrap();
    assert_eq!(a.successor(), Some(&node(100, "s:1")));
    assert_eq!(s.successor(), Some(&node(200, "a:1")));
}
