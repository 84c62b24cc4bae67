//! The crate's shape: its top-level modules form layers, never a circle. A generic part
//! (flow, store, slot, series, ...) that reaches back into a flow would be caught here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::repo_root;

/// The binary's own modules, which may use everything.
const BINARY: [&str; 4] = ["main", "lib", "cli", "ui"];

/// `crate::NAME` references in `text`, and the names in `use crate::{a, b::c}` groups.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|item| ident(item.trim())));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// Top-level module -> the top-level modules it refers to (unit tests excluded).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let top = first.trim_end_matches(".rs").to_owned();
            if BINARY.contains(&top.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            let refs = crate_refs(code);
            graph
                .entry(top.clone())
                .or_default()
                .extend(refs.into_iter().filter(|r| *r != top));
        }
    }
    let names: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| names.contains(d));
    }
    graph
}

/// A circle through `from`, as the path that closes it, when there is one.
fn circle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in &graph[last] {
            if next == from {
                let mut closed = path.clone();
                closed.push(from.to_owned());
                return Some(closed);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_in_no_circle() {
    let g = graph(&repo_root().join("src"));
    assert!(g.contains_key("store") && g.contains_key("kernel"), "{g:?}");
    let circles: Vec<String> = g
        .keys()
        .filter_map(|m| circle_through(&g, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        circles.is_empty(),
        "top-level modules import each other in a circle (a generic part must not know a flow):\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_reader_sees_every_form_of_reference() {
    let refs = crate_refs(
        "use crate::store::{Kind, Store};\nuse crate::{error::Error, flow};\nlet x = crate::process::Cmd::new();",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["error", "flow", "process", "store"]
    );
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(circle_through(&g, "a").unwrap(), ["a", "b", "a"]);
    g.get_mut("b").unwrap().clear();
    assert_eq!(circle_through(&g, "a"), None);
}
