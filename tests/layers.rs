//! The library's layers, checked from its sources: no import cycle between
//! the top-level modules of `src/`, every import pointing down the order
//! that `docs/architecture.md` draws, and no network type below `rpc`.
//!
//! A module's imports are every `crate::NAME` path in its files (comments
//! left out) and every `use super::...`-free `crate::{NAME, ...}` group.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top; a module may use only modules of a lower rank.
const LAYERS: &[&[&str]] = &[
    &["id", "clock", "error"],
    &["ring"],
    &["store"],
    &["sync", "replica", "room"],
    &["data"],
    &["rpc", "sim"],
    &["node"],
    &["ops"],
    &["chat", "loadgen"],
];

/// Modules that must not name the transport or its generated types.
const NO_NETWORK: &[&str] = &[
    "id", "clock", "error", "ring", "store", "sync", "replica", "room", "data", "sim",
];

fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("src/{module} is in no layer of tests/layers.rs"))
}

/// The text of a Rust file without its comments (line and block).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The top-level modules named by `crate::` paths in `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d}`: the first segment of each item.
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

/// Every top-level module of `src/` and the files it is made of.
fn modules() -> BTreeMap<String, Vec<std::path::PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" {
            continue;
        }
        let mut files = Vec::new();
        collect(&path, &mut files);
        modules.insert(name, files);
    }
    modules
}

fn collect(path: &Path, files: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            collect(&entry.unwrap().path(), files);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        files.push(path.to_path_buf());
    }
}

/// Each module's imports of other top-level modules; `Error` and `Result`
/// (re-exported at the crate root from `error`) count as `error`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(module, files)| {
            let mut uses = BTreeSet::new();
            for file in files {
                let code = without_comments(&std::fs::read_to_string(file).unwrap());
                for name in crate_paths(&code) {
                    let name = match name.as_str() {
                        "Error" | "Result" => "error".to_string(),
                        _ => name,
                    };
                    if &name != module && names.contains(&name) {
                        uses.insert(name);
                    }
                }
            }
            (module.clone(), uses)
        })
        .collect()
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = graph();
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in &graph[module] {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn every_import_points_down_the_layers() {
    let mut upward = Vec::new();
    for (module, uses) in graph() {
        for used in uses {
            if rank(&used) >= rank(&module) {
                upward.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point down (see docs/architecture.md):\n{}",
        upward.join("\n")
    );
}

#[test]
fn nothing_below_the_edge_names_the_transport() {
    let modules = modules();
    let mut found = Vec::new();
    for module in NO_NETWORK {
        for file in &modules[*module] {
            let code = without_comments(&std::fs::read_to_string(file).unwrap());
            for network in ["tonic", "prost", "pb::", "http::"] {
                if code.contains(network) {
                    found.push(format!("{} names {network}", file.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_plain_paths() {
    let code = without_comments(
        "use crate::{id::Id, store};\n// crate::chat in a comment\nlet x = crate::ring::NodeRef;",
    );
    let found = crate_paths(&code);
    assert_eq!(
        found,
        ["id", "ring", "store"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}
