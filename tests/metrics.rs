//! The admin port of a real process: Prometheus metrics that count what
//! the process served, by method and status.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn the_admin_port_counts_requests_by_method_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_new_ring(&dir.path().join("node"), 2, &["--admin-port", "0"]);
    let admin = node.admin_addr();
    // Loopback unless --admin-host says otherwise.
    assert!(admin.starts_with("127.0.0.1:"), "{admin}");
    let deadline = Instant::now() + SETTLE;
    while !chordal(&["health", "--addr", &node.addr]).status.success() {
        assert!(Instant::now() < deadline, "never healthy");
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..3 {
        let key = format!("k{i}");
        assert!(chordal(&["put", &key, "v", "--via", &node.addr])
            .status
            .success());
    }
    assert!(!chordal(&["get", "missing", "--via", &node.addr])
        .status
        .success());
    assert!(!chordal(&["put", "", "v", "--via", &node.addr])
        .status
        .success());

    let page = http_get(&admin, "/metrics").expect("the admin port answers");
    let count = |method: &str, code: &str| {
        metric(
            &page,
            &format!("chordal_requests_total{{method=\"{method}\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(count("Api/Put", "OK"), Some(3.0), "{page}");
    assert_eq!(count("Api/Get", "NOT_FOUND"), Some(1.0), "{page}");
    assert_eq!(count("Api/Put", "INVALID_ARGUMENT"), Some(1.0), "{page}");
    assert_eq!(
        metric(
            &page,
            "chordal_request_duration_seconds_count{method=\"Api/Put\"}"
        ),
        Some(4.0)
    );
    assert_eq!(metric(&page, "chordal_records"), Some(3.0), "{page}");
    assert_eq!(metric(&page, "chordal_members_joined"), Some(2.0), "{page}");
    assert!(metric(&page, "chordal_stabilize_rounds_total").unwrap() > 0.0);
    // Routes are remembered: the first request looked its owner up.
    assert!(metric(&page, "chordal_lookup_hops_count").unwrap() >= 1.0);
    assert!(http_get(&admin, "/nothing").is_none());
}
