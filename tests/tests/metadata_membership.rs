//! Membership changes under load: the metadata group grows from 3 to 5
//! members (one added with `cairn admin add-member`, one through the client)
//! and shrinks back to 3 by removing two original members, while clients
//! write through the gateway; nothing acknowledged is lost, and clients learn
//! the new members' addresses.

use anyhow::{bail, Context};
use cairn_tests::procs::{cairn_bin, ProcCluster, ProcOptions};
use cairn_tests::wait_for;
use cairn_tests::workload::{create_volumes, run_client, verify};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CLIENTS: usize = 8;

/// Runs `cairn admin <args>` and returns its standard output.
fn admin(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(cairn_bin()).arg("admin").args(args).output()?;
    if !out.status.success() {
        bail!("cairn admin {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (id, voter) of every member, as the leader of the highest term lists them
/// (a removed member may still think it leads an older term).
async fn members(c: &ProcCluster) -> anyhow::Result<Vec<(u64, bool)>> {
    let mut best: Option<cairn_proto::pb::StatusReply> = None;
    for a in &c.meta_addrs {
        if let Ok(s) = c.client.status(a).await {
            let leads = s.leader_id == s.node_id && s.leader_id != 0;
            if leads && best.as_ref().is_none_or(|b| b.term < s.term) {
                best = Some(s);
            }
        }
    }
    let s = best.context("no leader")?;
    Ok(s.members.iter().map(|m| (m.node_id, m.voter)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_to_five_and_shrink_to_three_under_writes() -> anyhow::Result<()> {
    let mut c = ProcCluster::start(ProcOptions::default()).await?;
    let gateway = c.gateways[0].main;
    let volumes = create_volumes(gateway, CLIENTS).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, vol) in volumes.into_iter().enumerate() {
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            run_client(vec![gateway], i, vol, usize::MAX, &stop, &done).await
        }));
    }
    wait_for("clients are under way", Duration::from_secs(60), || async {
        done.load(Ordering::Relaxed) >= CLIENTS
    })
    .await?;

    // Grow: member 4 through the CLI, member 5 through the client.
    let m4 = c.spawn_meta(4).await?;
    let m5 = c.spawn_meta(5).await?;
    let seeds = c.meta_addrs[..3].join(",");
    let out =
        admin(&["add-member", "--metadata", &seeds, "--id", "4", "--addr", &c.meta_addrs[m4]])?;
    assert!(out.contains(&c.meta_addrs[m4]), "{out}");
    c.client.add_member(5, &c.meta_addrs[m5]).await?;
    let want: Vec<(u64, bool)> = (1..=5).map(|id| (id, true)).collect();
    assert_eq!(members(&c).await?, want);
    let status = admin(&["status", "--metadata", &seeds])?;
    assert_eq!(status.lines().filter(|l| l.contains("http://")).count(), 5, "{status}");
    let at_five = done.load(Ordering::Relaxed);

    // Shrink: remove two original members (one through the CLI), then stop them.
    admin(&["remove-member", "--metadata", &seeds, "--id", "1"])?;
    c.client.remove_member(2).await?;
    let shrunk = wait_for("members 1 and 2 are gone", Duration::from_secs(30), || async {
        matches!(members(&c).await, Ok(m) if m == vec![(3, true), (4, true), (5, true)])
    })
    .await;
    if let Err(e) = shrunk {
        for a in &c.meta_addrs {
            eprintln!("{a}: {:?}", c.client.status(a).await);
        }
        return Err(e);
    }
    c.meta[0].kill9();
    c.meta[1].kill9();
    // The client, seeded with members 1-3, knows the group as it is now.
    // (Polled: when a removed member led, the others elect a new leader first.)
    let want = c.meta_addrs[2..].to_vec();
    wait_for("the client learns the new membership", Duration::from_secs(30), || async {
        matches!(c.client.refresh_members().await, Ok(a) if a == want)
    })
    .await?;

    // Writes go on through the gateway (seeded with 1-3 as well).
    let at_three = done.load(Ordering::Relaxed);
    wait_for("writes go on after the shrink", Duration::from_secs(60), || async {
        done.load(Ordering::Relaxed) >= at_three + CLIENTS * 3
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await??);
    }
    assert!(at_five > CLIENTS && at_three > at_five, "writes stalled during the changes");
    let v = verify(&c.client, &logs).await?;
    tracing::info!(?v, "verified");
    Ok(())
}
