//! The file -> file edges of one crate: every path a file names that leads
//! into another file's module. A path counts when it starts with `crate`,
//! `self`, `super`, a child module of the module it is written in, or a name
//! that a `use` bound to a module (`use crate::ebs;` then `ebs::Ebs`). It is
//! followed down through modules as far as they go; the edge points at the
//! file of the module where it stops, tied by the next name (`*` for a glob),
//! prefixed with any inline module it sits in (`tests::fixture`).
//!
//! Paths are read in `use` trees (groups, globs, renames, wherever the `use`
//! stands), in code (expressions, types, patterns, trait bounds), in macro
//! names and, token by token, inside macro calls. Re-exports are not
//! followed: a name taken through a parent's `pub use` ties to the parent.

use super::tree::{CrateTree, FileId, ModId};
use proc_macro2::{Spacing, TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use syn::visit::{self, Visit};
use syn::{Attribute, ItemMod, ItemUse, Macro, Path, UseTree, Visibility};

/// (from, to) -> the names by which `from` reaches into `to`.
pub type Edges = BTreeMap<(FileId, FileId), BTreeSet<String>>;

/// Every edge between two different files of the tree.
pub fn file_edges(tree: &CrateTree) -> Edges {
    let mut all = Edges::new();
    for (module, top) in tree.modules.iter().enumerate().filter(|(_, m)| m.file_root) {
        let ast = &tree.files[top.file].ast;
        let mut walker = Walker {
            tree,
            file: top.file,
            at: vec![module],
            aliases: HashMap::new(),
            collecting: true,
            edges: Edges::new(),
        };
        walker.visit_file(ast);
        walker.collecting = false;
        walker.visit_file(ast);
        for (key, names) in walker.edges {
            all.entry(key).or_default().extend(names);
        }
    }
    all
}

/// Reads one file in two passes: the first collects the names `use` binds
/// to modules, the second resolves every path into edges.
struct Walker<'a> {
    tree: &'a CrateTree,
    file: FileId,
    /// The module being read, innermost last: inline modules push onto it.
    at: Vec<ModId>,
    /// Per module, the local names that stand for a module.
    aliases: HashMap<ModId, HashMap<String, ModId>>,
    collecting: bool,
    edges: Edges,
}

/// The end of one branch of a `use` tree.
enum Leaf {
    /// `ident` imported as `local` (they differ for `as` and `self`).
    Name {
        ident: String,
        local: String,
    },
    Glob,
}

impl Walker<'_> {
    fn here(&self) -> ModId {
        *self.at.last().expect("a module is being read")
    }

    /// Where a path's first segment leads, seen from the current module.
    fn start(&self, first: &str) -> Option<ModId> {
        let here = self.here();
        match first {
            "crate" => Some(self.tree.crate_root(here)),
            "self" => Some(here),
            "super" => self.tree.modules[here].parent,
            name => {
                self.tree.child(here, name).or_else(|| self.aliases.get(&here)?.get(name).copied())
            }
        }
    }

    /// The deepest module a path reaches and the name after it, if any;
    /// `None` when the path does not start inside the crate.
    fn resolve<'p>(&self, segments: &'p [String]) -> Option<(ModId, Option<&'p str>)> {
        let (first, rest) = segments.split_first()?;
        let mut at = self.start(first)?;
        for segment in rest {
            let next = match segment.as_str() {
                "super" => self.tree.modules[at].parent,
                "self" => Some(at),
                name => self.tree.child(at, name),
            };
            match next {
                Some(module) => at = module,
                None => return Some((at, Some(segment))),
            }
        }
        Some((at, None))
    }

    /// Ties this file to the file of `target` by `name`, which is prefixed
    /// with the inline modules between that file's top and `target`.
    fn add_edge(&mut self, target: ModId, name: &str) {
        let to = self.tree.modules[target].file;
        if to == self.file {
            return;
        }
        let mut name = name.to_string();
        let mut module = &self.tree.modules[target];
        while let (false, Some(parent)) = (module.file_root, module.parent) {
            name = format!("{}::{name}", module.name);
            module = &self.tree.modules[parent];
        }
        self.edges.entry((self.file, to)).or_default().insert(name);
    }

    /// A path outside `use`: one segment is a local name (or `self`), never a module.
    fn path_named(&mut self, segments: &[String]) {
        if self.collecting || segments.len() < 2 {
            return;
        }
        if let Some((module, name)) = self.resolve(segments) {
            let name = name.unwrap_or_else(|| segments.last().expect("two segments"));
            self.add_edge(module, name);
        }
    }

    fn use_leaf(&mut self, prefix: Vec<String>, leaf: Leaf) {
        match leaf {
            Leaf::Glob => match self.resolve(&prefix) {
                Some((module, None)) if self.collecting => self.alias_children(module),
                Some((module, name)) if !self.collecting => {
                    self.add_edge(module, name.unwrap_or("*"))
                }
                _ => {}
            },
            Leaf::Name { ident, local } => {
                let mut segments = prefix;
                if ident != "self" {
                    segments.push(ident);
                }
                match self.resolve(&segments) {
                    Some((module, None)) if self.collecting && local != "_" => {
                        self.aliases.entry(self.here()).or_default().insert(local, module);
                    }
                    Some((module, Some(name))) if !self.collecting => {
                        let name = name.to_string();
                        self.add_edge(module, &name);
                    }
                    _ => {}
                }
            }
        }
    }

    /// `use m::*` brings `m`'s child modules into scope by name.
    fn alias_children(&mut self, module: ModId) {
        let here = self.here();
        let children = self.tree.modules[module].children.clone();
        let aliases = self.aliases.entry(here).or_default();
        for (name, child) in children {
            aliases.entry(name).or_insert(child);
        }
    }
}

impl<'ast> Visit<'ast> for Walker<'_> {
    fn visit_item_mod(&mut self, decl: &'ast ItemMod) {
        // `mod x;` is a file of its own, read on its own.
        let Some((_, items)) = &decl.content else { return };
        let Some(child) = self.tree.child(self.here(), &decl.ident.to_string()) else { return };
        self.at.push(child);
        items.iter().for_each(|item| self.visit_item(item));
        self.at.pop();
    }

    fn visit_item_use(&mut self, item: &'ast ItemUse) {
        if item.leading_colon.is_some() {
            return;
        }
        let mut leaves = Vec::new();
        use_leaves(&item.tree, &mut Vec::new(), &mut leaves);
        for (prefix, leaf) in leaves {
            self.use_leaf(prefix, leaf);
        }
    }

    fn visit_path(&mut self, path: &'ast Path) {
        if path.leading_colon.is_none() {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.path_named(&segments);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        self.visit_path(&mac.path);
        if !self.collecting {
            let mut found = Vec::new();
            token_paths(mac.tokens.clone(), &mut found);
            found.iter().for_each(|segments| self.path_named(segments));
        }
    }

    // `pub(in crate::x)` and attributes name no dependency.
    fn visit_visibility(&mut self, _: &'ast Visibility) {}
    fn visit_attribute(&mut self, _: &'ast Attribute) {}
}

/// Flattens a `use` tree into (path before the leaf, leaf).
fn use_leaves(tree: &UseTree, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Leaf)>) {
    let name = |ident: &syn::Ident, local: String| Leaf::Name { ident: ident.to_string(), local };
    match tree {
        UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            use_leaves(&path.tree, prefix, out);
            prefix.pop();
        }
        UseTree::Name(leaf) => {
            let local = match prefix.last() {
                Some(last) if leaf.ident == "self" => last.clone(),
                _ => leaf.ident.to_string(),
            };
            out.push((prefix.clone(), name(&leaf.ident, local)));
        }
        UseTree::Rename(leaf) => {
            out.push((prefix.clone(), name(&leaf.ident, leaf.rename.to_string())));
        }
        UseTree::Glob(_) => out.push((prefix.clone(), Leaf::Glob)),
        UseTree::Group(group) => group.items.iter().for_each(|t| use_leaves(t, prefix, out)),
    }
}

/// The `a::b::c` sequences in a macro's tokens (syn does not parse macro
/// bodies), skipping those that start with `::`.
fn token_paths(tokens: TokenStream, out: &mut Vec<Vec<String>>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let colons = |at: usize| {
        matches!((tokens.get(at), tokens.get(at + 1)),
            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
    };
    let ident_at = |at: usize| match tokens.get(at) {
        Some(TokenTree::Ident(ident)) => Some(ident.to_string()),
        _ => None,
    };
    let mut at = 0;
    while at < tokens.len() {
        if let TokenTree::Group(group) = &tokens[at] {
            token_paths(group.stream(), out);
        }
        let Some(first) = ident_at(at).filter(|_| at < 2 || !colons(at - 2)) else {
            at += 1;
            continue;
        };
        let mut segments = vec![first];
        at += 1;
        while let Some(next) = ident_at(at + 2).filter(|_| colons(at)) {
            segments.push(next);
            at += 3;
        }
        if segments.len() > 1 {
            out.push(segments);
        }
    }
}
