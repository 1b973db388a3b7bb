//! Errors a user can cause and fix: one sentence saying what is wrong and a
//! hint saying what to do, printed without a backtrace.

use std::fmt;

/// An error with the fix a user should try.
#[derive(Debug)]
pub struct Hinted {
    message: String,
    hint: String,
}

impl Hinted {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Hinted { message: message.into(), hint: hint.into() }
    }

    pub fn hint(&self) -> &str {
        &self.hint
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// How `main` reports a failure: `cairn: <what went wrong>` (the causes
/// joined by `: `), then the hint if there is one. The backtrace anyhow
/// captured is printed only when `RUST_BACKTRACE` asks for it.
pub fn report(e: &anyhow::Error) {
    eprintln!("cairn: {e:#}");
    if let Some(h) = e.chain().find_map(|c| c.downcast_ref::<Hinted>()) {
        eprintln!("  hint: {}", h.hint());
    }
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        eprintln!("{}", e.backtrace());
    }
}
