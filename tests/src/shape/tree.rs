//! The module tree of one crate, built the way rustc finds its files: from
//! each crate root (`src/lib.rs`, `src/main.rs`, `src/bin/*`, and the
//! `[lib]`/`[[bin]]` paths of the crate's Cargo.toml) through `mod x;`
//! declarations to `x.rs` or `x/mod.rs`, `#[path = "..."]` files, and inline
//! `mod x { .. }` blocks, which are modules of their own inside their file.
//!
//! Directories follow the 2018 rule: the children of `a.rs` live in `a/`,
//! those of `a/mod.rs`, of a crate root and of a `#[path]` file beside it.

use super::attrs;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use syn::Item;

/// Index of a file in [`CrateTree::files`].
pub type FileId = usize;
/// Index of a module in [`CrateTree::modules`].
pub type ModId = usize;

/// One parsed source file: a node of the import graph.
pub struct SourceFile {
    /// The path relative to the workspace root, with `/`: how reports name it.
    pub shown: String,
    pub ast: Rc<syn::File>,
    /// Compiled for unit tests only (declared under `#[cfg(test)]`).
    pub test: bool,
}

/// A module: the top level of a file, or an inline `mod x { .. }` in one.
pub struct Module {
    /// The name it is declared by (`crate` for a crate root).
    pub name: String,
    pub parent: Option<ModId>,
    pub file: FileId,
    pub children: BTreeMap<String, ModId>,
    /// The module is its file's top level, not an inline block.
    pub file_root: bool,
}

pub struct CrateTree {
    pub files: Vec<SourceFile>,
    pub modules: Vec<Module>,
    /// What could not be loaded, one line each (a `mod x;` without a file).
    pub problems: Vec<String>,
}

impl CrateTree {
    /// Loads every module reachable from the crate roots under `crate_dir`;
    /// `root` is what reported paths are relative to.
    pub fn load(root: &Path, crate_dir: &Path) -> Result<CrateTree> {
        let tree = CrateTree { files: Vec::new(), modules: Vec::new(), problems: Vec::new() };
        let mut loader = Loader { root, tree, by_path: HashMap::new(), loading: Vec::new() };
        for file in crate_roots(crate_dir)? {
            loader.load_file(&file, None, false, true)?;
        }
        Ok(loader.tree)
    }

    /// The child module `name` of `module`, if it declares one.
    pub fn child(&self, module: ModId, name: &str) -> Option<ModId> {
        self.modules[module].children.get(name).copied()
    }

    /// The crate root above `module` (`crate::` in a path).
    pub fn crate_root(&self, mut module: ModId) -> ModId {
        while let Some(parent) = self.modules[module].parent {
            module = parent;
        }
        module
    }
}

/// `path` relative to `root`, with `/` separators.
pub fn shown(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect();
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// The files rustc starts a crate from, those under `src/` only.
fn crate_roots(crate_dir: &Path) -> Result<Vec<PathBuf>> {
    let src = crate_dir.join("src");
    let mut roots = vec![src.join("lib.rs"), src.join("main.rs")];
    if let Ok(entries) = fs::read_dir(src.join("bin")) {
        for entry in entries {
            let path = entry?.path();
            roots.push(if path.is_dir() { path.join("main.rs") } else { path });
        }
    }
    roots.extend(manifest_targets(crate_dir)?);
    let mut roots: Vec<PathBuf> = roots.iter().map(|p| normalize(p)).collect();
    roots
        .retain(|p| p.is_file() && p.extension().is_some_and(|e| e == "rs") && p.starts_with(&src));
    roots.sort();
    roots.dedup();
    Ok(roots)
}

/// The `path`s of `[lib]` and `[[bin]]` in the crate's Cargo.toml, if any.
fn manifest_targets(crate_dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(text) = fs::read_to_string(crate_dir.join("Cargo.toml")) else {
        return Ok(Vec::new());
    };
    let manifest: toml::Table = text.parse().context("parse Cargo.toml")?;
    let lib = manifest.get("lib").into_iter();
    let bins = manifest.get("bin").and_then(|b| b.as_array()).into_iter().flatten();
    let paths = lib.chain(bins).filter_map(|target| target.get("path")?.as_str());
    Ok(paths.map(|p| crate_dir.join(p)).collect())
}

/// Folds `.` and `..` out of a path without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

struct Loader<'a> {
    root: &'a Path,
    tree: CrateTree,
    by_path: HashMap<PathBuf, FileId>,
    /// The files being loaded, outermost first: guards against a file that
    /// includes itself through `#[path]`.
    loading: Vec<PathBuf>,
}

impl Loader<'_> {
    /// Parses `path` once; later calls return the same file.
    fn file(&mut self, path: &Path, test: bool) -> Result<FileId> {
        if let Some(&file) = self.by_path.get(path) {
            self.tree.files[file].test &= test;
            return Ok(file);
        }
        let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parse {}", path.display()))?;
        let test = test || attrs::is_cfg_test(&ast.attrs);
        let shown = shown(self.root, path);
        self.tree.files.push(SourceFile { shown, ast: Rc::new(ast), test });
        self.by_path.insert(path.to_path_buf(), self.tree.files.len() - 1);
        Ok(self.tree.files.len() - 1)
    }

    fn add_module(
        &mut self,
        parent: Option<(ModId, &str)>,
        file: FileId,
        file_root: bool,
    ) -> ModId {
        let id = self.tree.modules.len();
        let name = parent.map_or("crate", |p| p.1).to_string();
        let children = BTreeMap::new();
        let module = Module { name, parent: parent.map(|p| p.0), file, children, file_root };
        self.tree.modules.push(module);
        if let Some((parent, name)) = parent {
            self.tree.modules[parent].children.insert(name.to_string(), id);
        }
        id
    }

    /// Loads `path` as a new module under `parent` (none for a crate root).
    /// `owns_dir`: its children live beside it (`mod.rs`, roots, `#[path]`).
    fn load_file(
        &mut self,
        path: &Path,
        parent: Option<(ModId, &str)>,
        test: bool,
        owns_dir: bool,
    ) -> Result<()> {
        let path = normalize(path);
        if self.loading.contains(&path) {
            bail!("{} includes itself through #[path]", path.display());
        }
        let file = self.file(&path, test)?;
        let ast = Rc::clone(&self.tree.files[file].ast);
        let test = test || self.tree.files[file].test;
        let module = self.add_module(parent, file, true);
        let file_dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mod_dir = match path.file_stem() {
            Some(stem) if !owns_dir => file_dir.join(stem),
            _ => file_dir.clone(),
        };
        self.loading.push(path);
        let declared = self.declare(&ast.items, module, test, &mod_dir, &file_dir);
        self.loading.pop();
        declared
    }

    /// Follows the `mod` items of `module`. `mod_dir` is where its children's
    /// files live; `path_base` is what a `#[path]` here is relative to.
    fn declare(
        &mut self,
        items: &[Item],
        module: ModId,
        test: bool,
        mod_dir: &Path,
        path_base: &Path,
    ) -> Result<()> {
        for item in items {
            let Item::Mod(decl) = item else { continue };
            let name = decl.ident.to_string();
            let test = test || attrs::is_cfg_test(&decl.attrs);
            let existing = self.tree.child(module, &name);
            if let Some((_, inner)) = &decl.content {
                let file = self.tree.modules[module].file;
                let child = match existing {
                    Some(child) => child,
                    None => self.add_module(Some((module, &name)), file, false),
                };
                let dir = mod_dir.join(&name);
                self.declare(inner, child, test, &dir, &dir)?;
            } else if existing.is_none() {
                self.declare_file(module, &name, &decl.attrs, test, mod_dir, path_base)?;
            }
        }
        Ok(())
    }

    /// Finds and loads the file of `mod name;`.
    fn declare_file(
        &mut self,
        module: ModId,
        name: &str,
        attrs: &[syn::Attribute],
        test: bool,
        mod_dir: &Path,
        path_base: &Path,
    ) -> Result<()> {
        let parent = Some((module, name));
        if let Some(path) = attrs::path_attr(attrs) {
            return self.load_file(&path_base.join(path), parent, test, true);
        }
        let flat = mod_dir.join(format!("{name}.rs"));
        let nested = mod_dir.join(name).join("mod.rs");
        if flat.is_file() {
            self.load_file(&flat, parent, test, false)
        } else if nested.is_file() {
            self.load_file(&nested, parent, test, true)
        } else {
            let declaring = &self.tree.files[self.tree.modules[module].file].shown;
            let problem = format!(
                "module without a file: `mod {name};` in {declaring} (looked for {} and {})",
                shown(self.root, &flat),
                shown(self.root, &nested)
            );
            self.tree.problems.push(problem);
            Ok(())
        }
    }
}
