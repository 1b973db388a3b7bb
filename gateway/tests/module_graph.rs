//! The shape of the crate's modules, checked over the source: a module uses
//! only modules beside or below it. Concretely, from the `crate::`, `super::`
//! and `self::` paths of every file (its `use` lines and paths in code):
//!
//! - no module names one of its ancestors (a child never takes items from
//!   its parent's file, nor from the crate root);
//! - within each folder, the dependencies between its entries (files and
//!   sub-folders, each taken as a whole) have no circle.
//!
//! Together these rule out import circles between files, and between folders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path below the crate root (`[]` is the root).
type ModPath = Vec<String>;

/// One file of the crate: its module path and its source.
struct File {
    module: ModPath,
    rel: String,
    text: String,
}

fn files(src: &Path) -> Vec<File> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(file(src, &path));
            }
        }
    }
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

fn file(src: &Path, path: &PathBuf) -> File {
    let rel = path.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
    let mut module: ModPath = rel.trim_end_matches(".rs").split('/').map(String::from).collect();
    if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        module.pop();
    }
    File { module, rel, text: std::fs::read_to_string(path).unwrap() }
}

/// The `use` trees of a statement (`use a::{b, c::{d, e as f}, g::*};`),
/// flattened to paths; `self` in braces names the prefix itself.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or("").trim();
        return vec![path.trim_end_matches("::*").trim_end_matches("::self").to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| if p == "self" { prefix.to_string() } else { format!("{prefix}::{p}") })
        .collect()
}

/// Every path starting with `crate`, `super` or `self` that a file names,
/// with the module it is resolved from: the file's own module, or for code
/// in an inline module (`mod tests { .. }`) that inline module.
fn references(f: &File) -> Vec<(ModPath, String)> {
    let mut out = Vec::new();
    let mut inline: Option<String> = None;
    let mut statement = String::new();
    for line in f.text.lines() {
        let code = line.split("//").next().unwrap_or("");
        if inline.is_none() {
            let head = code.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
            if let Some(name) = head.strip_prefix("mod ").and_then(|r| r.strip_suffix(" {")) {
                inline = Some(name.trim().to_string());
                continue;
            }
        } else if line == "}" {
            inline = None;
            continue;
        }
        let mut from = f.module.clone();
        from.extend(inline.clone());
        let trimmed = code.trim_start();
        if !statement.is_empty() || trimmed.starts_with("use ") || trimmed.starts_with("pub use ") {
            statement.push_str(code);
            if let Some(end) = statement.find(';') {
                let body = statement[..end].trim_start();
                let body = body.trim_start_matches("pub ").trim_start_matches("use ");
                out.extend(expand(body).into_iter().map(|p| (from.clone(), p)));
                statement.clear();
            }
            continue;
        }
        out.extend(code_paths(code).into_iter().map(|p| (from.clone(), p)));
    }
    out
}

/// The `crate::`, `super::` and `self::` paths in a line of code.
fn code_paths(code: &str) -> Vec<String> {
    let is_path = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    for head in ["crate::", "super::", "self::"] {
        for (i, _) in code.match_indices(head) {
            if code[..i].chars().next_back().is_some_and(is_path) {
                continue;
            }
            let end = code[i..].find(|c: char| !is_path(c)).map_or(code.len(), |e| i + e);
            out.push(code[i..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// The module a path names (its longest prefix that is a module of the
/// crate), resolved from module `from`.
fn resolve(from: &ModPath, path: &str, modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut segs = path.split("::").map(str::trim).filter(|s| !s.is_empty());
    let mut base: ModPath = match segs.next()? {
        "crate" => Vec::new(),
        "self" => from.clone(),
        "super" => from[..from.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    let mut rest: Vec<&str> = segs.collect();
    while rest.first() == Some(&"super") {
        base.pop();
        rest.remove(0);
    }
    let mut found = base.clone();
    let mut cur = base;
    for s in rest {
        cur.push(s.to_string());
        if modules.contains(&cur) {
            found = cur.clone();
        } else {
            break;
        }
    }
    Some(found)
}

/// A module's file, or the file of the nearest enclosing one for an inline
/// module.
fn owner(m: &ModPath, modules: &BTreeSet<ModPath>) -> ModPath {
    let mut m = m.clone();
    while !modules.contains(&m) {
        m.pop();
    }
    m
}

fn show(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// A circle in `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n.as_str()) {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn modules_use_only_modules_beside_or_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = files(&src);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| f.module.clone()).collect();
    let mut problems = Vec::new();
    // Per folder (by its module path): entry -> entries it uses, with why.
    let mut folders: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut why: BTreeMap<(ModPath, String, String), String> = BTreeMap::new();
    let mut edges = 0;
    for f in &files {
        for (from, path) in references(f) {
            let Some(target) = resolve(&from, &path, &modules) else { continue };
            let target = owner(&target, &modules);
            let a = &f.module;
            if &target == a || target.starts_with(a) {
                continue; // itself, or below it
            }
            edges += 1;
            if a.starts_with(&target) {
                problems.push(format!("{} uses its ancestor {} (`{path}`)", f.rel, show(&target)));
                continue;
            }
            let k = a.iter().zip(&target).take_while(|(x, y)| x == y).count();
            let folder = a[..k].to_vec();
            let (x, y) = (a[k].clone(), target[k].clone());
            why.entry((folder.clone(), x.clone(), y.clone()))
                .or_insert_with(|| format!("{} -> {} (`{path}`)", f.rel, show(&target)));
            folders.entry(folder).or_default().entry(x).or_default().insert(y);
        }
    }
    assert!(edges > 20, "the check found only {edges} dependencies: is the parser broken?");
    for (folder, graph) in &folders {
        if let Some(c) = circle(graph) {
            let ties: Vec<String> = c
                .windows(2)
                .map(|w| why[&(folder.clone(), w[0].clone(), w[1].clone())].clone())
                .collect();
            problems.push(format!(
                "circle in {}: {}\n    {}",
                show(folder),
                c.join(" -> "),
                ties.join("\n    ")
            ));
        }
    }
    problems.dedup();
    assert!(problems.is_empty(), "module shape broken:\n  {}", problems.join("\n  "));
}

#[test]
fn use_trees_expand_to_paths() {
    assert_eq!(
        expand("crate::jobs::{self, copy::{spawn_copy, Stop as S}, host::*}"),
        [
            "crate::jobs",
            "crate::jobs::copy::spawn_copy",
            "crate::jobs::copy::Stop",
            "crate::jobs::host"
        ]
    );
    let f = File {
        module: vec!["ebs".into(), "seal".into()],
        rel: "ebs/seal.rs".into(),
        text: "use super::state::{is_direct,\n    Ebs};\nfn f() { super::start::X; }\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n".into(),
    };
    let refs: Vec<String> =
        references(&f).into_iter().map(|(m, p)| format!("{}:{p}", show(&m))).collect();
    assert_eq!(
        refs,
        [
            "ebs::seal:super::state::is_direct",
            "ebs::seal:super::state::Ebs",
            "ebs::seal:super::start::X",
            "ebs::seal::tests:super",
        ]
    );
}
