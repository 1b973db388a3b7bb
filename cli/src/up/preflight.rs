//! What `cairn up` checks before it starts anything, so that the mistakes a
//! user can make end in one sentence and a hint, not in a member's log:
//! a data directory already in use or holding something else, and ports
//! taken by another program.

use crate::hint::Hinted;
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Held while `cairn up` runs: a second `cairn up` on the same directory
/// would start a second set of members on the same data.
pub struct DirLock {
    _file: File,
}

pub fn lock_data_dir(dir: &Path) -> anyhow::Result<DirLock> {
    let path = dir.join("up.lock");
    let mut file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            let pid = pid.trim();
            let who = if pid.is_empty() { String::new() } else { format!(" (pid {pid})") };
            return Err(Hinted::new(
                format!("{} is in use by another `cairn up`{who}", dir.display()),
                "stop that one (Ctrl-C in its terminal), or pass --data-dir with another directory",
            )
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(DirLock { _file: file })
}

/// Entries `cairn up` itself creates (and `up.log`, where people and tests
/// send its output); anything else in a directory without `cluster.toml`
/// belongs to someone else.
fn ours(name: &str) -> bool {
    matches!(
        name,
        "up.lock"
            | "up.log"
            | "env"
            | "gateway"
            | "cluster.toml.tmp"
            | "cluster.key"
            | "cluster.tmp"
            | "credentials"
            | "credentials.tmp"
            | "tls"
    ) || name.starts_with("meta-")
        || name.starts_with("chunk-")
}

/// A new cluster is only created in an empty directory (or one holding
/// what an interrupted first start left).
pub fn check_new_dir(dir: &Path) -> anyhow::Result<()> {
    let foreign = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| !ours(n));
    match foreign {
        None => Ok(()),
        Some(name) => Err(Hinted::new(
            format!(
                "{} is not a Cairn data directory: it has no cluster.toml but holds {name:?}",
                dir.display()
            ),
            "pass --data-dir with a new or empty directory (or the one `cairn up` made before)",
        )
        .into()),
    }
}

/// One port `cairn up` will listen on, and the flag that chooses it.
pub struct Port<'a> {
    pub port: u16,
    pub what: &'a str,
    pub flag: Option<&'a str>,
}

/// Fails if any fixed port is taken (port 0 is picked later, always free).
pub fn check_ports(host: &str, ports: &[Port<'_>]) -> anyhow::Result<()> {
    for p in ports.iter().filter(|p| p.port != 0) {
        match std::net::TcpListener::bind((host, p.port)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let hint = match p.flag {
                    Some(flag) => format!(
                        "stop the program using it, or choose another port with {flag} (0 picks a free one)"
                    ),
                    None => "stop the program using it (another `cairn up`?): this cluster's \
                             metadata members keep their ports for life"
                        .to_string(),
                };
                return Err(Hinted::new(
                    format!("port {} on {host} ({}) is already in use", p.port, p.what),
                    hint,
                )
                .into());
            }
            Err(e) => {
                return Err(Hinted::new(
                    format!("cannot listen on {host}:{} ({}): {e}", p.port, p.what),
                    "--host must be an address of this machine, such as 127.0.0.1",
                )
                .into())
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_named_with_its_flag() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = check_ports(
            "127.0.0.1",
            &[Port { port, what: "the gateway's HTTP port", flag: Some("--http-port") }],
        )
        .unwrap_err();
        let h = e.downcast_ref::<Hinted>().unwrap();
        assert!(e.to_string().contains(&format!("port {port} on 127.0.0.1")), "{e}");
        assert!(h.hint().contains("--http-port"));
        drop(taken);
        check_ports("127.0.0.1", &[Port { port, what: "x", flag: None }]).unwrap();
    }

    #[test]
    fn one_data_directory_one_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_data_dir(dir.path()).unwrap();
        let e = lock_data_dir(dir.path()).err().unwrap();
        assert!(e.to_string().contains("in use by another `cairn up`"), "{e}");
        drop(lock);
        lock_data_dir(dir.path()).unwrap();
        check_new_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("photos.tar"), b"x").unwrap();
        let e = check_new_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("\"photos.tar\""), "{e}");
    }
}
