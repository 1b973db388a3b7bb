//! Tables as the CLI prints them: a header row, columns padded, no borders
//! (like `docker ps`), so they read well and `awk` still splits them.

use comfy_table::{presets, Table};

pub fn new(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.to_vec());
    t
}
