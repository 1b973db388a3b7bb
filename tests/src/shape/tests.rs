//! The resolver and the limits on tiny crates written to a temp dir.

use super::{check_crate, CrateShape, Edge};
use std::fs;

/// Writes `files` (paths relative to the crate dir) and checks the crate.
fn shape_of(files: &[(&str, &str)]) -> CrateShape {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    check_crate(dir.path(), dir.path()).unwrap()
}

fn edge(from: &str, to: &str, names: &[&str]) -> Edge {
    let names = names.iter().map(|n| n.to_string()).collect();
    Edge { from: from.to_string(), to: to.to_string(), names }
}

#[test]
fn two_file_circle_is_found() {
    let shape = shape_of(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "use crate::b::B;\npub struct A(B);\n"),
        ("src/b.rs", "pub struct B;\nfn f(_: super::a::A) {}\n"),
    ]);
    assert_eq!(
        shape.violations,
        [
            "circle of 2 files in .: src/a.rs, src/b.rs",
            "  src/a.rs -> src/b.rs: B",
            "  src/b.rs -> src/a.rs: A",
        ]
    );
}

#[test]
fn parent_using_its_child_is_fine() {
    let shape = shape_of(&[
        ("src/lib.rs", "mod child;\npub use child::C;\nfn f() -> child::C { child::C }\n"),
        ("src/child.rs", "pub struct C;\nfn g() { let _ = self::C; }\n"),
    ]);
    assert_eq!(shape.edges, [edge("src/lib.rs", "src/child.rs", &["C"])]);
    assert!(shape.violations.is_empty(), "{:?}", shape.violations);
}

#[test]
fn glob_of_super_in_inline_tests_is_no_edge() {
    let shape = shape_of(&[
        ("src/lib.rs", "mod a;\npub fn f() {}\n"),
        ("src/a.rs", "pub fn g() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n"),
    ]);
    assert!(shape.edges.is_empty(), "{:?}", shape.edges);
}

#[test]
fn grouped_use_gives_two_edges() {
    let shape = shape_of(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("src/a.rs", "pub struct X;\n"),
        ("src/b.rs", "pub struct Y;\n"),
        ("src/c.rs", "use crate::{a::X, b::Y};\n"),
    ]);
    let expected = [edge("src/c.rs", "src/a.rs", &["X"]), edge("src/c.rs", "src/b.rs", &["Y"])];
    assert_eq!(shape.edges, expected);
}

#[test]
fn children_of_a_file_live_in_its_folder_and_path_attrs_are_followed() {
    let shape = shape_of(&[
        ("src/main.rs", "mod a;\n#[path = \"other.rs\"]\nmod b;\nfn main() { b::run(); }\n"),
        ("src/a.rs", "mod inner;\npub use inner::I;\n"),
        ("src/a/inner.rs", "pub struct I;\n"),
        ("src/other.rs", "pub fn run() { let _ = crate::a::inner::I; }\n"),
    ]);
    let expected = [
        edge("src/a.rs", "src/a/inner.rs", &["I"]),
        edge("src/main.rs", "src/other.rs", &["run"]),
        edge("src/other.rs", "src/a/inner.rs", &["I"]),
    ];
    assert_eq!(shape.edges, expected);
    assert!(shape.violations.is_empty(), "{:?}", shape.violations);
}

#[test]
fn a_path_attr_in_a_plain_file_is_beside_it_and_its_super_is_that_file() {
    let shape = shape_of(&[
        ("src/lib.rs", "mod x;\n"),
        ("src/x.rs", "pub struct Y;\n#[path = \"x_run.rs\"]\nmod run;\n"),
        ("src/x_run.rs", "use super::Y;\n"),
    ]);
    assert_eq!(shape.edges, [edge("src/x_run.rs", "src/x.rs", &["Y"])]);
}

#[test]
fn a_name_in_an_inline_module_is_shown_with_it() {
    let shape = shape_of(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "#[cfg(test)]\npub mod tests {\n    pub fn fixture() {}\n}\n"),
        ("src/b.rs", "fn f() {\n    crate::a::tests::fixture();\n}\n"),
    ]);
    assert_eq!(shape.edges, [edge("src/b.rs", "src/a.rs", &["tests::fixture"])]);
}

#[test]
fn module_aliases_nested_uses_and_macros_are_followed() {
    let shape = shape_of(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\n"),
        ("src/a.rs", "pub struct X;\n"),
        ("src/b.rs", "use crate::a;\nfn f() -> a::X { a::X }\n"),
        ("src/c.rs", "fn f() {\n    use super::a::X as Y;\n    let _ = Y;\n}\n"),
        ("src/d.rs", "fn f() {\n    let _ = vec![crate::a::X];\n}\n"),
    ]);
    let expected = [
        edge("src/b.rs", "src/a.rs", &["X"]),
        edge("src/c.rs", "src/a.rs", &["X"]),
        edge("src/d.rs", "src/a.rs", &["X"]),
    ];
    assert_eq!(shape.edges, expected);
}

#[test]
fn long_files_and_functions_are_reported_but_not_tests() {
    let body = "    let _ = 1;\n".repeat(120);
    let long_fn = format!("struct S;\nimpl S {{\n    fn long() {{\n{body}    }}\n}}\n");
    let tests = format!("#[cfg(test)]\nmod tests {{\n    #[test]\n    fn t() {{\n{body}}}\n}}\n");
    let filler = "// filler\n".repeat(700);
    let shape = shape_of(&[("src/lib.rs", &format!("{long_fn}{tests}")), ("src/big.rs", &filler)]);
    assert_eq!(
        shape.violations,
        [
            "file too long: src/big.rs has 700 lines (limit 650)",
            "function too long: src/lib.rs:3 S::long has 122 lines (limit 110)",
        ]
    );
}

#[test]
fn a_missing_module_file_is_reported() {
    let shape = shape_of(&[("src/lib.rs", "mod gone;\n")]);
    assert_eq!(
        shape.violations,
        ["module without a file: `mod gone;` in src/lib.rs (looked for src/gone.rs and src/gone/mod.rs)"]
    );
}
