//! Taking a copy job over without trusting clocks (`JobOp::AcquireObserved`)
//! and the epoch it leaves: `acquisitions` rises on every change of holder.

use super::copy_job_tests::{create, job, op, snapshot, with_volume, LEASE};
use super::messages::{CommandOutput, JobOp};

fn observed(seen: Option<u64>) -> JobOp {
    JobOp::AcquireObserved { lease_ms: LEASE, seen_expiry_ms: seen }
}

#[test]
fn an_observed_takeover_needs_the_expiry_unchanged_whatever_the_clock() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 0, None), "gw-a", 0).expect("snapshot");
    let seen = job(&r, &s.id).unwrap().lease_expires_ms;

    // gw-b's clock is an hour ahead: without an observation it takes nothing.
    let far = 3_600_000;
    let CommandOutput::CopyJob(j) = op(&mut r, &s.id, "gw-b", far, observed(None)).unwrap() else {
        panic!("job expected")
    };
    assert_eq!((j.owner.as_deref(), j.acquisitions), (Some("gw-a"), 1));
    // Nor with a value it never saw.
    op(&mut r, &s.id, "gw-b", far, observed(Some(seen + 1))).unwrap();
    assert_eq!(job(&r, &s.id).unwrap().owner.as_deref(), Some("gw-a"));

    // The expiry it watched is still there: the holder stopped renewing.
    op(&mut r, &s.id, "gw-b", far, observed(Some(seen))).unwrap();
    let j = job(&r, &s.id).unwrap();
    assert_eq!((j.owner.as_deref(), j.acquisitions), (Some("gw-b"), 2));
    assert_eq!(j.lease_expires_ms, far + LEASE);
}

#[test]
fn a_renewal_in_between_defeats_an_observed_takeover() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 0, None), "gw-a", 0).expect("snapshot");
    let seen = job(&r, &s.id).unwrap().lease_expires_ms;
    // gw-a's clock is far behind gw-b's, and it renews after gw-b looked.
    op(&mut r, &s.id, "gw-a", 1, JobOp::Renew { lease_ms: LEASE }).unwrap();
    op(&mut r, &s.id, "gw-b", 10_000_000, observed(Some(seen))).unwrap();
    let j = job(&r, &s.id).unwrap();
    assert_eq!(
        (j.owner.as_deref(), j.acquisitions, j.lease_expires_ms),
        (Some("gw-a"), 1, 1 + LEASE)
    );
    // A checkpoint renews as well.
    let seen = j.lease_expires_ms;
    let cp = JobOp::Checkpoint { checkpoint_block: 8, progress: 10, lease_ms: LEASE };
    op(&mut r, &s.id, "gw-a", 2, cp).unwrap();
    op(&mut r, &s.id, "gw-b", 10_000_000, observed(Some(seen))).unwrap();
    assert_eq!(job(&r, &s.id).unwrap().owner.as_deref(), Some("gw-a"));
}

#[test]
fn acquisitions_rise_on_every_change_of_holder_and_only_then() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 0, None), "gw-a", 0).expect("snapshot");
    let epoch = |r: &_| job(r, &s.id).unwrap().acquisitions;
    // The holder re-acquiring its own job needs no observation and keeps the epoch.
    op(&mut r, &s.id, "gw-a", 50, observed(None)).unwrap();
    assert_eq!(epoch(&r), 1);

    let mut holders = vec!["gw-a"];
    for (i, next) in ["gw-b", "gw-c", "gw-a", "gw-b"].into_iter().enumerate() {
        let seen = job(&r, &s.id).unwrap().lease_expires_ms;
        op(&mut r, &s.id, next, 100 * (i as u64 + 1), observed(Some(seen))).unwrap();
        holders.push(next);
        assert_eq!(job(&r, &s.id).unwrap().owner.as_deref(), Some(next));
        assert_eq!(epoch(&r), holders.len() as u32, "after {holders:?}");
        // Renewals, checkpoints and re-acquisitions by the holder keep it.
        op(&mut r, &s.id, next, 100 * (i as u64 + 1) + 1, JobOp::Renew { lease_ms: LEASE })
            .unwrap();
        op(&mut r, &s.id, next, 100 * (i as u64 + 1) + 2, observed(None)).unwrap();
        assert_eq!(epoch(&r), holders.len() as u32);
    }
    // The old clock-comparing Acquire (old log entries) raises it as well.
    let lapsed = job(&r, &s.id).unwrap().lease_expires_ms;
    op(&mut r, &s.id, "gw-z", lapsed, JobOp::Acquire { lease_ms: LEASE }).unwrap();
    assert_eq!((job(&r, &s.id).unwrap().owner.as_deref(), epoch(&r)), (Some("gw-z"), 6));
}
