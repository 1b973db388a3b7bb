//! Size limits: no source file and no function grows past what a reader can
//! hold at once. Test code is exempt from the function limit (`#[test]`
//! functions, `#[cfg(test)]` modules and files), not from the file limit.

use super::attrs;
use super::tree::{shown, CrateTree};
use anyhow::{Context, Result};
use std::fs;
use std::path::Path;
use syn::visit::{self, Visit};
use syn::{Block, ImplItemFn, ItemFn, ItemImpl, ItemMod, ItemTrait, Signature, TraitItemFn, Type};

/// Lines a file under `src/` may have: the ~600 of issue 14, with slack so
/// that one more import does not fail a file that was split with care.
pub const MAX_FILE_LINES: usize = 650;

/// Lines a function may span, from `fn` to its closing brace (doc comments
/// and attributes not counted): the ~100 of issue 14, with the same slack.
pub const MAX_FN_LINES: usize = 110;

/// Every `.rs` file under `crate_dir/src` past [`MAX_FILE_LINES`], one line each.
pub fn long_files(root: &Path, crate_dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    rust_files(&crate_dir.join("src"), &mut files)?;
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            let file = shown(root, &file);
            found.push(format!("file too long: {file} has {lines} lines (limit {MAX_FILE_LINES})"));
        }
    }
    Ok(found)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every function of the tree's non-test files past [`MAX_FN_LINES`], one line each.
pub fn long_fns(tree: &CrateTree) -> Vec<String> {
    let mut found = Vec::new();
    for file in tree.files.iter().filter(|f| !f.test) {
        let mut sizes = FnSizes { owner: None, found: Vec::new() };
        sizes.visit_file(&file.ast);
        for (line, name, lines) in sizes.found {
            found.push(format!(
                "function too long: {}:{line} {name} has {lines} lines (limit {MAX_FN_LINES})",
                file.shown
            ));
        }
    }
    found
}

/// Measures the functions of one file, skipping test code.
struct FnSizes {
    /// The type or trait whose methods are being read, for the report.
    owner: Option<String>,
    /// (first line, name, lines) of each function over the limit.
    found: Vec<(usize, String, usize)>,
}

impl FnSizes {
    fn measure(&mut self, sig: &Signature, block: &Block) {
        let first = sig.fn_token.span.start().line;
        let lines = block.brace_token.span.close().end().line + 1 - first;
        if lines > MAX_FN_LINES {
            let name = match &self.owner {
                Some(owner) => format!("{owner}::{}", sig.ident),
                None => sig.ident.to_string(),
            };
            self.found.push((first, name, lines));
        }
    }

    fn with_owner(&mut self, owner: Option<String>, read: impl FnOnce(&mut Self)) {
        let outer = std::mem::replace(&mut self.owner, owner);
        read(self);
        self.owner = outer;
    }
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs::is_test_fn(attrs) || attrs::is_cfg_test(attrs)
}

impl<'ast> Visit<'ast> for FnSizes {
    fn visit_item_mod(&mut self, item: &'ast ItemMod) {
        if !attrs::is_cfg_test(&item.attrs) {
            visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast ItemFn) {
        if !is_test(&item.attrs) {
            self.measure(&item.sig, &item.block);
            self.with_owner(None, |s| visit::visit_item_fn(s, item));
        }
    }

    fn visit_item_impl(&mut self, item: &'ast ItemImpl) {
        if !attrs::is_cfg_test(&item.attrs) {
            let owner = type_name(&item.self_ty);
            self.with_owner(Some(owner), |s| visit::visit_item_impl(s, item));
        }
    }

    fn visit_impl_item_fn(&mut self, item: &'ast ImplItemFn) {
        if !is_test(&item.attrs) {
            self.measure(&item.sig, &item.block);
            visit::visit_impl_item_fn(self, item);
        }
    }

    fn visit_item_trait(&mut self, item: &'ast ItemTrait) {
        let owner = item.ident.to_string();
        self.with_owner(Some(owner), |s| visit::visit_item_trait(s, item));
    }

    fn visit_trait_item_fn(&mut self, item: &'ast TraitItemFn) {
        if let Some(block) = item.default.as_ref().filter(|_| !is_test(&item.attrs)) {
            self.measure(&item.sig, block);
            visit::visit_trait_item_fn(self, item);
        }
    }
}

/// The name an impl block is for: `Records` for `impl<T> Foo for Records<T>`.
fn type_name(ty: &Type) -> String {
    match ty {
        Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
        Type::Reference(reference) => Some(type_name(&reference.elem)),
        _ => None,
    }
    .unwrap_or_else(|| "_".to_string())
}
