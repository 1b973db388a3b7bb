//! The code keeps its shape (issue 14): no crate has an import circle
//! between its source files, and no file or function under `src/` grows past
//! its size limit. The failure lists every violation, one line each; see
//! `cairn_tests::shape` for how files and paths are read, and run
//! `cargo run -p cairn-tests --bin shape -- CRATE` to check one crate.

use std::path::Path;

#[test]
fn workspace_keeps_its_shape() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let crates = cairn_tests::shape::check_workspace(root).expect("read the workspace's sources");
    assert!(crates.iter().any(|c| c.files > 1), "the check read no source files");
    let violations: Vec<&str> =
        crates.iter().flat_map(|c| c.violations.iter().map(String::as_str)).collect();
    assert!(
        violations.is_empty(),
        "the workspace lost its shape; fix each of these:\n{}",
        violations.join("\n")
    );
}
