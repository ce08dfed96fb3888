//! The library's layers, checked from its sources: no import cycle between
//! the top-level modules of `src/`, every import pointing down the order
//! that `docs/architecture.md` draws, and no network type below `rpc`.
//!
//! A module's imports are every `crate::NAME` path in its files (comments
//! left out) and every `use super::...`-free `crate::{NAME, ...}` group.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// Crates and types of the transport.
const NETWORK: &[&str] = &[
    "tonic", "prost", "pb::", "http::", "hyper", "tower", "h2::", "axum",
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

/// The code of a Rust file without its comments, strings and character
/// literals (raw strings included), so that nothing quoted counts.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            'r' if matches!(next, Some('#') | Some('"'))
                && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')) =>
            {
                // r"..." or r#"..."#: ends at a quote followed by as many #.
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    out.push(c);
                    i += 1;
                    continue;
                }
                j += 1;
                while j < chars.len() {
                    if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' => {
                // A character literal ('x', '\n', '\''); otherwise a lifetime.
                let end = if next == Some('\\') {
                    (i + 3..chars.len().min(i + 12)).find(|&k| chars[k] == '\'')
                } else if chars.get(i + 2) == Some(&'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match end {
                    Some(end) => {
                        out.push_str("' '");
                        i = end + 1;
                    }
                    None => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The first segment of each item of a use-tree group that starts at
/// `group` (just after its `{`), nested groups included.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_item_start = true;
    for (index, c) in group.char_indices() {
        match c {
            '{' => {
                depth += 1;
                at_item_start = false;
            }
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item_start = true,
            c if at_item_start && (c.is_alphanumeric() || c == '_') => {
                heads.push(identifier(&group[index..]));
                at_item_start = false;
            }
            c if !c.is_whitespace() => at_item_start = false,
            _ => {}
        }
    }
    heads
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules a path starting right after `crate::` (or after
/// enough `super::` to reach the crate root) names.
fn heads_after(rest: &str) -> Vec<String> {
    match rest.strip_prefix('{') {
        Some(group) => group_heads(group),
        None => vec![identifier(rest)],
    }
}

/// The top-level modules named in `code`, a file of module `path` (e.g.
/// `["sim", "data", "net"]`): `crate::` paths, and `super::` chains that
/// climb to the crate root.
fn crate_paths(code: &str, path: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        found.extend(heads_after(rest));
    }
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let preceded = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        rest = &rest[at..];
        let mut climbs = 0;
        while let Some(after) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = after;
        }
        if !preceded && climbs >= path.len() {
            found.extend(heads_after(rest));
        }
    }
    found
}

/// Every top-level module of `src/` and the files it is made of.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
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

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            collect(&entry.unwrap().path(), files);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        files.push(path.to_path_buf());
    }
}

/// The module path of a file of `src/`: `src/sim/data/net.rs` is
/// `["sim", "data", "net"]`, `src/data/mod.rs` is `["data"]`.
fn module_path(file: &Path) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let relative = file.strip_prefix(&src).unwrap().with_extension("");
    let mut path: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    path
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
                let code = code_only(&std::fs::read_to_string(file).unwrap());
                for name in crate_paths(&code, &module_path(file)) {
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
            let code = code_only(&std::fs::read_to_string(file).unwrap());
            for network in NETWORK {
                if code.contains(network) {
                    found.push(format!("{} names {network}", file.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_checker_sees_grouped_nested_and_climbing_paths_and_not_quoted_ones() {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let code = code_only(concat!(
        "use crate::{id::Id, data::{A, B}, rpc::X};\n",
        "// crate::chat in a comment\n",
        "let q = '\"'; let s = \"crate::node\"; let r = r#\"crate::ops\"#;\n",
        "let x = crate::ring::NodeRef; fn f<'a>(x: &'a str) {}\n",
    ));
    assert_eq!(
        crate_paths(&code, &["store".into()]),
        names(&["id", "data", "rpc", "ring"])
    );
    // `super::` from a module's root reaches the crate root; from deeper
    // files only as many levels as they are deep.
    let code = code_only("use super::sim::Sim; use super::super::{chat, loadgen};");
    assert_eq!(
        crate_paths(&code, &["data".into()]),
        names(&["sim", "chat", "loadgen"])
    );
    assert_eq!(
        crate_paths(&code, &["data".into(), "owner".into()]),
        names(&["chat", "loadgen"])
    );
}
