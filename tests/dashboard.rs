//! The dashboard on the admin port of real processes: the JSON it draws
//! from, and the page itself rendered by headless Chromium, whose
//! screenshot must show every process's arcs in that process's colour.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// The colour the page gives the `index`-th process in address order:
/// `hsl(index × 137.508°, 75%, 45%)`, as RGB.
fn process_colour(index: usize) -> [u8; 3] {
    let (h, s, l) = ((index as f64 * 137.508) % 360.0, 0.75, 0.45);
    let c = (1.0 - (2.0 * l - 1.0f64).abs()) * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let m = l - c / 2.0;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [r, g, b].map(|v| ((v + m) * 255.0).round() as u8)
}

fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name;
        }
    }
    panic!("no Chromium: scripts/install-deps.sh installs it");
}

#[test]
fn the_dashboard_draws_every_process_of_the_ring_in_its_colour() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_nodes(dir.path(), 1, None, 2, &["--admin-port", "0"]);
    let bootstrap = nodes[0].addr.clone();
    nodes.extend(start_nodes(dir.path(), 2, Some(&bootstrap), 2, &[]));
    let admin = nodes[0].admin_addr();
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    for i in 0..30 {
        assert!(
            chordal(&["put", &format!("k{i}"), "v", "--via", &bootstrap])
                .status
                .success()
        );
    }

    // The JSON the pages draw.
    let deadline = Instant::now() + SETTLE;
    let ring: serde_json::Value = loop {
        let ring: serde_json::Value =
            serde_json::from_str(&http_get(&admin, "/api/ring").unwrap_or_default())
                .unwrap_or_default();
        if ring["closed"] == true && ring["members"].as_array().is_some_and(|m| m.len() == 6) {
            break ring;
        }
        assert!(Instant::now() < deadline, "{ring}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(ring["processes"].as_array().unwrap().len(), 3);
    let records: u64 = ring["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["records"].as_u64().unwrap())
        .sum();
    assert_eq!(records, 30, "each key in one member's arc");
    let node: serde_json::Value =
        serde_json::from_str(&http_get(&admin, "/api/node").unwrap()).unwrap();
    assert_eq!(node["members"].as_array().unwrap().len(), 2);
    assert!(!node["members"][0]["successors"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(http_get(&admin, "/").unwrap().contains("<svg id=\"ring\""));
    assert!(http_get(&admin, "/node").unwrap().contains("Chordal node"));

    // The page as a browser draws it.
    let shot = dir.path().join("ring.png");
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(["--window-size=1100,800", "--virtual-time-budget=5000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{admin}/"))
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1100, 800));
    let channels = frame.color_type.samples();
    for index in 0..3 {
        let want = process_colour(index);
        let matching = pixels[..frame.buffer_size()]
            .chunks(channels)
            .filter(|p| (0..3).all(|c| p[c].abs_diff(want[c]) <= 8))
            .count();
        // Each process owns two arcs of a ring 22 pixels thick, and a
        // swatch in the table.
        assert!(
            matching > 300,
            "process {index}: {matching} pixels of {want:?}"
        );
    }
}
