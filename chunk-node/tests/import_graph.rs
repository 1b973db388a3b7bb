//! The crate's files import each other without circles: a module imports
//! only modules beside or below it. Read from the source: every `crate::`,
//! `super::` and `self::` path outside comments and test modules is an
//! arrow to the file of the longest module it names, and every `mod x;` an
//! arrow from the parent to its child. So a child that takes a name from its
//! parent (or through a re-export in it) closes a circle, as it should.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module path (`a::b`, empty for the crate root) of every file under `src`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("list src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Vec<String> =
                rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// The code of a file without comments, and without what follows its first
/// `#[cfg(test)]` (test modules come last in this crate).
fn code(text: &str) -> Vec<String> {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .map(|l| l.split("//").next().unwrap_or("").to_string())
        .collect()
}

/// `crate::`, `super::` and `self::` paths in `line`, as their segments.
fn paths(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = line[from..].find(start).map(|i| from + i) {
            from = at + start.len();
            let word_before =
                at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            if word_before {
                continue;
            }
            let rest: String = line[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(rest.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect());
        }
    }
    out
}

/// The module `segments` lead to from `module`: the longest known prefix.
fn resolve(module: &str, segments: &[String], known: &BTreeMap<String, PathBuf>) -> String {
    let mut at: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_string).collect()
    };
    let mut segs = segments.iter().peekable();
    match segs.next().map(String::as_str) {
        Some("crate") => at.clear(),
        Some("super") => {
            at.pop();
            while segs.peek().is_some_and(|s| *s == "super") {
                segs.next();
                at.pop();
            }
        }
        _ => {}
    }
    for s in segs {
        at.push(s.clone());
        if !known.contains_key(&at.join("::")) {
            at.pop();
            break;
        }
    }
    at.join("::")
}

/// The `mod x;` a line declares, if any.
fn declared(line: &str) -> Option<&str> {
    let decl = line.trim().trim_start_matches("pub(crate) ").trim_start_matches("pub ");
    decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';'))
}

/// Arrows between the crate's modules. Files no `mod` outside a test
/// module declares (test files) are left out.
fn arrows(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut known = modules(src);
    let texts: BTreeMap<String, String> = known
        .iter()
        .map(|(m, p)| (m.clone(), fs::read_to_string(p).expect("read source")))
        .collect();
    let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &texts {
        for line in code(text) {
            if let Some(child) = declared(&line) {
                let child = if module.is_empty() {
                    child.to_string()
                } else {
                    format!("{module}::{child}")
                };
                children.entry(module.clone()).or_default().insert(child);
            }
        }
    }
    let all_children: BTreeSet<&String> = children.values().flatten().collect();
    known.retain(|m, _| m.is_empty() || all_children.contains(m));
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in known.keys() {
        let to = graph.entry(module.clone()).or_default();
        to.extend(children.get(module).into_iter().flatten().cloned());
        for line in code(&texts[module]) {
            for p in paths(&line) {
                let target = resolve(module, &p, &known);
                if target != *module {
                    to.insert(target);
                }
            }
        }
    }
    graph
}

/// One circle of `graph`, as the modules along it, if there is any.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // 0: not seen, 1: on the current path, 2: done.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let from = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut c = path[from..].to_vec();
                    c.push(next.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(m, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = arrows(&src);
    assert!(graph.len() > 10, "the source was not found: {graph:?}");
    if let Some(c) = circle(&graph) {
        let names: Vec<String> =
            c.iter().map(|m| if m.is_empty() { "lib".into() } else { m.clone() }).collect();
        panic!("import circle: {}", names.join(" -> "));
    }
}

#[test]
fn the_check_sees_a_child_using_its_parent() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("".to_string(), BTreeSet::from(["a".to_string()])),
        ("a".to_string(), BTreeSet::from(["a::b".to_string()])),
        ("a::b".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(circle(&graph), Some(vec!["a".into(), "a::b".into(), "a".into()]));
    let known: BTreeMap<String, PathBuf> =
        ["", "a", "a::b", "c"].iter().map(|m| (m.to_string(), PathBuf::new())).collect();
    let seg = |p: &str| p.split("::").map(str::to_string).collect::<Vec<_>>();
    assert_eq!(resolve("a::b", &seg("super::X"), &known), "a");
    assert_eq!(resolve("a::b", &seg("crate::c::Y::new"), &known), "c");
    assert_eq!(resolve("a::b", &seg("crate::a::b::Z"), &known), "a::b");
    assert_eq!(paths("use crate::a::b::{X, Y};"), vec![seg("crate::a::b")]);
}
