//! Runs the shape check over the crates named on the command line
//! (directories relative to the workspace root; all members if none) and
//! prints what it finds: `cargo run -p cairn-tests --bin shape -- gateway`.
//! With `--edges` it also prints every file -> file edge.

use anyhow::Context;
use cairn_tests::shape;
use std::path::Path;
use std::process::ExitCode;

fn main() -> anyhow::Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let with_edges = args.iter().any(|a| a == "--edges");
    args.retain(|a| a != "--edges");
    let dirs = if args.is_empty() {
        shape::members(root)?
    } else {
        args.iter().map(|a| root.join(a)).collect()
    };
    let mut clean = true;
    for dir in dirs {
        let crate_shape = shape::check_crate(root, &dir)?;
        println!(
            "{}: {} files, {} edges, {} violation lines",
            crate_shape.name,
            crate_shape.files,
            crate_shape.edges.len(),
            crate_shape.violations.len()
        );
        if with_edges {
            for edge in &crate_shape.edges {
                println!("  edge {} -> {}: {}", edge.from, edge.to, edge.names.join(", "));
            }
        }
        crate_shape.violations.iter().for_each(|line| println!("{line}"));
        clean &= crate_shape.violations.is_empty();
    }
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
