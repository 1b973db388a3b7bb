//! The processes of a `cairn up` cluster: started, watched, restarted with
//! back-off when they exit on their own, and stopped in reverse order.

use crate::process::{addr_file, read_addrs, stop_signal, write_atomic, BoundAddrs};
use anyhow::{bail, Context};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// A member that ran at least this long before exiting counts as having
/// worked: its back-off starts again from the first step.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Exits in a row, each within [`STABLE_AFTER`] of its start, after which
/// the member is left down.
const MAX_FAST_EXITS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How to start one member: its subcommand, config and listen addresses.
struct Launch {
    exe: PathBuf,
    kind: &'static str,
    listen: String,
    nbd_listen: Option<String>,
    /// Metrics and health (metadata and chunk nodes; the gateway serves
    /// them on its main listener).
    http_listen: Option<String>,
}

/// One process of the cluster.
pub struct Member {
    pub name: String,
    pub dir: PathBuf,
    launch: Launch,
    child: Option<Child>,
    started: Instant,
    fast_exits: u32,
    restart_at: Option<Instant>,
    /// Set once a restarted member wrote its address file again.
    back: bool,
    given_up: bool,
    log_path: PathBuf,
}

impl Member {
    /// Writes `config` to the member's directory and starts it.
    pub fn start(
        exe: &Path,
        kind: &'static str,
        name: &str,
        dir: &Path,
        config: &str,
        listen: &str,
        nbd_listen: Option<&str>,
    ) -> anyhow::Result<Member> {
        write_atomic(&dir.join("config.toml"), config.as_bytes())?;
        let mut m = Member {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            launch: Launch {
                exe: exe.to_path_buf(),
                kind,
                listen: listen.to_string(),
                nbd_listen: nbd_listen.map(str::to_string),
                http_listen: (kind != "gateway").then(|| {
                    let host = listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
                    format!("{host}:0")
                }),
            },
            child: None,
            started: Instant::now(),
            fast_exits: 0,
            restart_at: None,
            back: true,
            given_up: false,
            log_path: dir.join("log"),
        };
        m.spawn()?;
        Ok(m)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let addr = addr_file(&self.dir);
        let _ = std::fs::remove_file(&addr);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path)?;
        let mut cmd = Command::new(&self.launch.exe);
        cmd.arg(self.launch.kind)
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .arg("--listen")
            .arg(&self.launch.listen)
            .arg("--addr-file")
            .arg(&addr)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(n) = &self.launch.nbd_listen {
            cmd.arg("--nbd-listen").arg(n);
        }
        if let Some(h) = &self.launch.http_listen {
            cmd.arg("--http-listen").arg(h);
        }
        // Logs go to a file: log format and filter come from the environment
        // `cairn up` itself runs in (CAIRN_LOG, CAIRN_LOG_FORMAT).
        self.child = Some(cmd.spawn().with_context(|| format!("starting {}", self.name))?);
        self.started = Instant::now();
        Ok(())
    }

    /// Waits until the member wrote its address file, then keeps those
    /// addresses for restarts: clients, Raft and the env file know them.
    pub async fn wait_addrs(&mut self) -> anyhow::Result<BoundAddrs> {
        let start = Instant::now();
        loop {
            if let Some(a) = read_addrs(&addr_file(&self.dir)) {
                self.launch.listen = a.main.clone();
                if self.launch.nbd_listen.is_some() {
                    self.launch.nbd_listen = a.nbd.clone();
                }
                if self.launch.http_listen.is_some() {
                    self.launch.http_listen = a.http.clone();
                }
                return Ok(a);
            }
            self.check_alive()?;
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} did not start within {READY_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// While the cluster starts, a member that exits is an error.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("{} {}; its log ends with:\n{}", self.name, describe(status), self.tail());
        }
        Ok(())
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// One look at a running cluster's member: notices an exit, schedules
    /// the restart or gives up, and restarts when its time has come.
    fn tend(&mut self, now: Instant) {
        if self.given_up {
            return;
        }
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            self.child = None;
            self.exited(describe(status), now);
        }
        if self.restart_at.is_some_and(|t| now >= t) {
            self.restart_at = None;
            self.back = false;
            if let Err(e) = self.spawn() {
                self.exited(format!("could not be started ({e:#})"), now);
            }
        }
        if !self.back && self.child.is_some() && read_addrs(&addr_file(&self.dir)).is_some() {
            self.back = true;
            eprintln!("cairn: {} is serving again", self.name);
        }
    }

    fn exited(&mut self, how: String, now: Instant) {
        if now.duration_since(self.started) >= STABLE_AFTER {
            self.fast_exits = 0;
        }
        self.fast_exits += 1;
        if self.fast_exits >= MAX_FAST_EXITS {
            self.given_up = true;
            eprintln!(
                "cairn: {} {how}; it exited {} times in a row within {} s of starting, so it \
                 stays down (the rest of the cluster keeps running; its log: {})",
                self.name,
                self.fast_exits,
                STABLE_AFTER.as_secs(),
                self.log_path.display()
            );
            return;
        }
        let delay = backoff(self.fast_exits);
        eprintln!("cairn: {} {how}; restarting in {} s", self.name, delay.as_secs());
        self.restart_at = Some(now + delay);
    }

    /// SIGTERM, then up to 20 s for a clean exit, then SIGKILL.
    async fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else { return };
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(20), child.wait()).await.is_err() {
            eprintln!("cairn: {} did not stop in 20 s; killing it", self.name);
            let _ = child.kill().await;
        }
    }
}

/// 1 s, 2 s, 4 s, ... up to 30 s, by the number of fast exits in a row.
fn backoff(fast_exits: u32) -> Duration {
    let shift = fast_exits.saturating_sub(1).min(5);
    (FIRST_BACKOFF * (1 << shift)).min(MAX_BACKOFF)
}

/// `exited (SIGKILL)`, `exited with status 101`.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("exited ({})", s.as_str()),
            Err(_) => format!("exited (signal {sig})"),
        },
        (None, None) => format!("exited ({status})"),
    }
}

/// Polls `pred` until it holds; fails if a member exits or after
/// [`READY_TIMEOUT`].
pub async fn wait_until<F, Fut>(
    what: &str,
    members: &mut [Member],
    mut pred: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if pred().await {
            return Ok(());
        }
        for m in members.iter_mut() {
            m.check_alive()?;
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keeps the cluster running until Ctrl-C (or SIGTERM): a member that exits
/// is restarted with back-off, on the addresses it had.
pub async fn supervise(members: &mut [Member]) {
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let now = Instant::now();
                for m in members.iter_mut() {
                    m.tend(now);
                }
            }
        }
    }
}

/// Stops members in reverse start order: gateway, chunk nodes, metadata.
pub async fn stop_all(members: &mut Vec<Member>) {
    while let Some(mut m) = members.pop() {
        m.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let secs: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn exits_are_described_as_people_read_them() {
        assert_eq!(describe(ExitStatus::from_raw(9)), "exited (SIGKILL)");
        assert_eq!(describe(ExitStatus::from_raw(101 << 8)), "exited with status 101");
    }
}
