//! `cairn up` as a user runs it: separate processes, an env file once the
//! cluster answers, and Ctrl-C stopping every process it started.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2) != Some("Z"),
        Err(_) => false,
    }
}

fn child_pids(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path().join("addr.toml")).unwrap_or_default();
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("pid = ") {
                pids.extend(p.trim().parse::<i32>());
            }
        }
    }
    pids
}

#[test]
fn up_serves_then_ctrl_c_stops_every_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut up = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["up", "--data-dir"])
        .arg(&data)
        .args(["--http-port", "0", "--nbd-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cairn up");
    let env = data.join("env");
    wait_for("cairn up writes its env file", Duration::from_secs(120), || {
        assert!(up.try_wait().expect("poll").is_none(), "cairn up exited early");
        env.exists()
    });
    let text = std::fs::read_to_string(&env).expect("env");
    for key in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "CAIRN_NBD",
        "CAIRN_OUTPOST_ARN",
    ] {
        assert!(text.contains(&format!("export {key}=")), "{key} missing from env:\n{text}");
    }
    assert!(text.contains("export AWS_REGION=cairn-1\n"));
    let pids = child_pids(&data);
    assert_eq!(pids.len(), 10, "3 metadata + 6 chunk (2 per AZ, 2 on the Outpost) + 1 gateway");
    assert!(pids.iter().all(|p| alive(*p)));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = up.try_wait().expect("poll") {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "cairn up did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "cairn up exited with {status}");
    wait_for("every child process exits", Duration::from_secs(30), || {
        pids.iter().all(|p| !alive(*p))
    });
    assert!(!env.exists(), "env file must go away with the cluster");
}
