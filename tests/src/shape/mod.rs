//! The workspace's shape check (issue 14): within each crate no import
//! circle between source files, and no file or function past a size limit.
//!
//! For each member crate it reads `src/` with `syn` (tests/, benches and
//! build scripts are not read), builds the module tree from the crate roots
//! ([`tree`]), turns the paths each file names into file -> file edges
//! ([`edges`]), and reports every strongly connected component of more than
//! one file ([`circles`]) with the edges and names that tie it, then every
//! long file and long function ([`sizes`]). Each violation is one line, so
//! whoever breaks the shape reads exactly what to fix.
//!
//! `tests/tests/shape.rs` runs it over the workspace; the `shape` binary
//! (`cargo run -p cairn-tests --bin shape -- gateway`) over chosen crates.

mod attrs;
mod circles;
mod edges;
mod sizes;
mod tree;

#[cfg(test)]
mod tests;

use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use tree::{CrateTree, FileId};

/// What the check found in one crate.
pub struct CrateShape {
    /// The crate's directory, relative to the workspace root.
    pub name: String,
    /// The source files in its module tree.
    pub files: usize,
    /// Every file -> file edge, sorted.
    pub edges: Vec<Edge>,
    /// One line per violation; a circle's edges follow it, indented.
    pub violations: Vec<String>,
}

/// `from` names items of `to`.
#[derive(Debug, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub names: Vec<String>,
}

/// Checks every member crate of the workspace at `root`.
pub fn check_workspace(root: &Path) -> Result<Vec<CrateShape>> {
    members(root)?.iter().map(|dir| check_crate(root, dir)).collect()
}

/// Checks the crate in `crate_dir`; reported paths are relative to `root`.
pub fn check_crate(root: &Path, crate_dir: &Path) -> Result<CrateShape> {
    let tree = CrateTree::load(root, crate_dir)
        .with_context(|| format!("load the modules of {}", crate_dir.display()))?;
    let edges = edges::file_edges(&tree);
    let name = tree::shown(root, crate_dir);
    let mut violations = tree.problems.clone();
    for circle in circles::circles(tree.files.len(), edges.keys().copied()) {
        violations.extend(describe_circle(&tree, &edges, &name, &circle));
    }
    violations.extend(sizes::long_files(root, crate_dir)?);
    violations.extend(sizes::long_fns(&tree));
    let shown = |file: FileId| tree.files[file].shown.clone();
    let mut edges: Vec<Edge> = edges
        .iter()
        .map(|(&(from, to), names)| Edge {
            from: shown(from),
            to: shown(to),
            names: names.iter().cloned().collect(),
        })
        .collect();
    edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    Ok(CrateShape { name, files: tree.files.len(), edges, violations })
}

/// The circle's files on one line, then each edge inside it with its names.
fn describe_circle(
    tree: &CrateTree,
    edges: &edges::Edges,
    crate_name: &str,
    circle: &[FileId],
) -> Vec<String> {
    let shown = |file: &FileId| tree.files[*file].shown.as_str();
    let mut files: Vec<&str> = circle.iter().map(shown).collect();
    files.sort_unstable();
    let mut inside: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| circle.contains(from) && circle.contains(to))
        .map(|((from, to), names)| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            format!("  {} -> {}: {}", shown(from), shown(to), names.join(", "))
        })
        .collect();
    inside.sort();
    let head = format!("circle of {} files in {crate_name}: {}", files.len(), files.join(", "));
    std::iter::once(head).chain(inside).collect()
}

/// The member crates (directories with a `src/`) of the workspace at `root`,
/// from its Cargo.toml; a `dir/*` member stands for each crate in `dir`.
pub fn members(root: &Path) -> Result<Vec<PathBuf>> {
    let text = fs::read_to_string(root.join("Cargo.toml")).context("read the root Cargo.toml")?;
    let manifest: toml::Table = text.parse().context("parse the root Cargo.toml")?;
    let members = manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .context("the root Cargo.toml lists no [workspace] members")?;
    let mut dirs = Vec::new();
    for member in members.iter().filter_map(|m| m.as_str()) {
        match member.strip_suffix("/*") {
            Some(parent) => {
                for entry in fs::read_dir(root.join(parent))? {
                    dirs.push(entry?.path());
                }
            }
            None => dirs.push(root.join(member)),
        }
    }
    dirs.retain(|dir| dir.join("Cargo.toml").is_file() && dir.join("src").is_dir());
    dirs.sort();
    Ok(dirs)
}
