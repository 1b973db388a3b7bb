//! SIGKILL of the metadata leader while 50 clients write through the gateway:
//! every call answered 200 is in the group exactly once, retried writes do
//! not double, and the only failures clients see are retryable 503s.

use cairn_tests::procs::{ProcCluster, ProcOptions};
use cairn_tests::wait_for;
use cairn_tests::workload::{create_volumes, run_client, verify};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CLIENTS: usize = 50;
const OPS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_under_50_clients_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let mut c = ProcCluster::start(ProcOptions::default()).await?;
    let gateway = c.gateways[0].main;
    let volumes = create_volumes(gateway, CLIENTS).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, vol) in volumes.into_iter().enumerate() {
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            run_client(vec![gateway], i, vol, OPS, &stop, &done).await
        }));
    }

    // Kill the leader once the clients are well under way.
    wait_for("clients are under way", Duration::from_secs(60), || async {
        done.load(Ordering::Relaxed) >= CLIENTS * 2
    })
    .await?;
    wait_for("a leader", Duration::from_secs(30), || async { c.leader().await.is_some() }).await?;
    let leader = c.leader().await.unwrap_or(0);
    let done_at_kill = done.load(Ordering::Relaxed);
    c.meta[leader].kill9();
    tracing::info!(leader, done_at_kill, "metadata leader killed");

    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await??);
    }
    let total = CLIENTS * OPS;
    assert!(done_at_kill < total, "the kill came after every call finished");

    let v = verify(&c.client, &logs).await?;
    tracing::info!(?v, "verified");
    assert_eq!(v.calls_ok + logs.iter().map(|l| l.failed_snapshots.len()).sum::<usize>(), total);

    // The killed member comes back and converges to the same applied index.
    c.meta[leader].restart().await?;
    let addr = c.meta_addrs[leader].clone();
    wait_for("the restarted member catches up", Duration::from_secs(30), || async {
        let Ok(me) = c.client.status(&addr).await else { return false };
        let mut best = 0;
        for a in &c.meta_addrs {
            if let Ok(s) = c.client.status(a).await {
                best = best.max(s.last_applied);
            }
        }
        me.last_applied >= best && best > 0
    })
    .await?;
    Ok(())
}
