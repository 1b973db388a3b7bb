"""Benchmark: snapshots that move. On one `cairn up` cluster, a volume of
SIZE_GIB (default 4) with the snapshot benchmark's realistic content:

- CopySnapshot of its full snapshot from the region to the Outpost, then,
  after 1% of the blocks are rewritten, of the incremental one: seconds
  from the call to `completed`, and the bytes the copy sent (what the
  Outpost lacked); the last copy is restored on the Outpost and compared
  byte for byte;
- ModifySnapshotTier (archive) of the full snapshot: seconds to
  `archival-completed`, MiB/s of snapshot content, objects and bytes in the
  object store (a directory on the same disk); then garbage collection
  frees its chunks (the bytes the chunk nodes gave back);
- RestoreSnapshotTier (temporary) of it with a cold page cache: seconds,
  MiB/s; the restored snapshot backs a volume compared byte for byte;
- restore with a full read-back (CreateVolume from the snapshot, then the
  whole volume read over NBD and compared) from local disk, and on a second
  cluster whose chunk nodes keep their sealed packs in the capacity tier (a
  bucket of a local S3 server, s3s-fs, on the same disk): cold (node caches
  empty, page cache dropped) and warm (the same snapshot restored again:
  the segments the first restore fetched are in the node caches), with the
  ranged GETs each restore made (from the nodes' metrics).

Prints one table. Not a test: numbers vary with the machine.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

from cluster import BIN, Cluster, wait_for  # noqa: E402
from snapshot_vs_restic import (  # noqa: E402
    BLOCK, SIZE_GIB, cold, make_image, rewrite_one_percent, run, stored_bytes)
from s3server import S3Server  # noqa: E402
from util import http_json  # noqa: E402

FAST = {"Delay": 1, "MaxAttempts": 3600}


def poll(pred, what):
    started = time.monotonic()
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() - started > 3600:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.02 if time.monotonic() - started < 2 else 0.2)


def restore_read_back(c, snap, img):
    """CreateVolume from `snap`, then the whole volume read over NBD and
    compared with `img`: (volume, seconds, identical)."""
    ec2 = c.client()
    t0 = time.monotonic()
    v = ec2.create_volume(AvailabilityZone="cairn-1b", SnapshotId=snap)["VolumeId"]
    poll(lambda: ec2.describe_volumes(VolumeIds=[v])["Volumes"][0]["State"] == "available",
         "restored volume")
    same = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(img),
                           c.nbd_uri(v)], capture_output=True).returncode == 0
    return v, time.monotonic() - t0, same


def tier_fetches(c):
    """Segments the chunk nodes fetched from the bucket so far (their
    cairn_chunk_tier_cache_misses_total)."""
    total = 0
    for addr in c.data_dir.glob("chunk-*/addr.toml"):
        http = next(line.split("=", 1)[1].strip().strip('"') for line in addr.read_text().splitlines()
                    if line.startswith("http"))
        with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as r:
            text = r.read().decode()
        m = re.search(r"^cairn_chunk_tier_cache_misses_total (\d+)", text, re.M)
        total += int(m.group(1)) if m else 0
    return total


def capacity_tier(work, img, content_mib, rows):
    """The capacity-tier rows: a cluster whose chunk nodes keep their sealed
    packs (32 MiB) in a bucket; the snapshot restored cold, then warm."""
    s3 = S3Server(work / "s3").start()
    args, env = s3.capacity_args(s3.bucket("cairn-packs"))
    c = Cluster(work / "capacity", [*args, "--pack-mib", "32"], env).start()
    try:
        ec2 = c.client()
        vol = ec2.create_volume(AvailabilityZone="cairn-1a", Size=SIZE_GIB)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
        run(["qemu-img", "convert", "-n", "-W", "-f", "raw", "-O", "raw", str(img), c.nbd_uri(vol)])
        snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)
        packs = [d for d in c.data_dir.glob("chunk-*/data/packs")]
        poll(lambda: not [f for p in packs for f in p.glob("*.pack")], "uploads")
        in_bucket = sum(s3.objects("cairn-packs").values())
        on_disk = sum(f.stat().st_size for p in packs for f in p.glob("*.open"))
        share = in_bucket / max(1, in_bucket + on_disk)
        cold(img)
        fetched = tier_fetches(c)
        _, t, same_cold = restore_read_back(c, snap, img)
        now = tier_fetches(c)
        rows.append(("restore + read-back, capacity tier, cold", t,
                     f"{content_mib / t:.0f} MiB/s, {now - fetched} ranged GETs "
                     f"({share:.0%} of packs in the bucket)"))
        # Restored again, the volume may be hosted by the zone's other node,
        # which reads its own replicas first: some of them are still cold.
        _, t, same_warm = restore_read_back(c, snap, img)
        rows.append(("restore + read-back, capacity tier, warm", t,
                     f"{content_mib / t:.0f} MiB/s, {tier_fetches(c) - now} ranged GETs"))
        return same_cold and same_warm
    finally:
        c.stop()
        s3.stop()


def main():
    work = Path(tempfile.mkdtemp(prefix="cairn-bench-tiers-"))
    nblocks = SIZE_GIB * 2048
    img = work / "disk.img"
    print(f"bench: building a {SIZE_GIB} GiB image in {work}", flush=True)
    make_image(img, nblocks)
    c = Cluster(work / "cairn").start()
    rows = []
    try:
        ec2 = c.client()
        region, arn = c.env["AWS_REGION"], c.env["CAIRN_OUTPOST_ARN"]
        vol = ec2.create_volume(AvailabilityZone="cairn-1a", Size=SIZE_GIB)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
        run(["qemu-img", "convert", "-n", "-W", "-f", "raw", "-O", "raw", str(img), c.nbd_uri(vol)])

        def snapshot():
            s = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
            ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s], WaiterConfig=FAST)
            return s

        def copy_to_outpost(snap):
            os.sync()
            t = time.monotonic()
            cp = ec2.copy_snapshot(SourceSnapshotId=snap, SourceRegion=region,
                                   DestinationOutpostArn=arn)["SnapshotId"]
            poll(lambda: ec2.describe_snapshots(SnapshotIds=[cp])["Snapshots"][0]["State"]
                 == "completed", "copy")
            took = time.monotonic() - t
            live = http_json(f"{c.endpoint}/_cairn/snapshots/{cp}/progress")["live"]
            return cp, took, live["bytes_sent"]

        s1 = snapshot()
        full = ec2.describe_snapshots(SnapshotIds=[s1])["Snapshots"][0]
        content_mib = full.get("FullSnapshotSizeInBytes", nblocks * BLOCK) / 2**20
        c1, t, sent = copy_to_outpost(s1)
        rows.append(("copy region -> Outpost, full", t, f"{sent / 2**20:.1f} MiB sent"))

        first = work / "first.img"  # the full snapshot's content, for the end
        run(["cp", "--sparse=always", str(img), str(first)])
        cold(img)
        local, t, same_local = restore_read_back(c, s1, img)
        rows.append(("restore + read-back, local disk", t, f"{content_mib / t:.0f} MiB/s"))
        rewrite_one_percent(img, nblocks, c.nbd, vol)
        s2 = snapshot()
        c2, t, sent = copy_to_outpost(s2)
        rows.append(("copy region -> Outpost, 1% changed", t, f"{sent / 2**20:.1f} MiB sent"))
        edge = ec2.create_volume(SnapshotId=c2, AvailabilityZone="cairn-1a", OutpostArn=arn)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[edge], WaiterConfig=FAST)
        same_edge = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(img),
                                    c.nbd_uri(edge)], capture_output=True).returncode == 0

        # The archive: of the full snapshot, alone (everything else that
        # shares its chunks is deleted, so GC can free them).
        for v in (vol, edge, local):
            ec2.delete_volume(VolumeId=v)
        for s in (s2, c1, c2):
            ec2.delete_snapshot(SnapshotId=s)
        # Deleted volumes let go of their sources once gone.
        poll(lambda: not ec2.describe_volumes(
            Filters=[{"Name": "volume-id", "Values": [vol, edge, local]}])["Volumes"], "volumes gone")
        gc = [BIN, "admin", "gc", "--wait", "--data-dir", str(c.data_dir)]
        run(gc)
        os.sync()
        t0 = time.monotonic()
        ec2.modify_snapshot_tier(SnapshotId=s1, StorageTier="archive")

        def tier_status():
            return ec2.describe_snapshot_tier_status(
                Filters=[{"Name": "snapshot-id", "Values": [s1]}])["SnapshotTierStatuses"][0]

        poll(lambda: tier_status()["LastTieringOperationStatus"] == "archival-completed", "archive")
        t = time.monotonic() - t0
        store = c.data_dir / "archive" / "snapshots" / s1
        objects = sorted(p for p in store.iterdir())
        store_bytes = sum(p.stat().st_size for p in objects)
        rows.append(("archive (ModifySnapshotTier)", t,
                     f"{content_mib / t:.0f} MiB/s, {len(objects)} objects, "
                     f"{store_bytes / 2**20:.1f} MiB in the store"))
        before = stored_bytes(c)
        run(gc)
        freed = before - stored_bytes(c)
        rows.append(("gc after archiving", 0.0,
                     f"{freed / 2**20:.1f} MiB freed on chunk nodes (all replicas)"))

        cold(first)
        t0 = time.monotonic()
        ec2.restore_snapshot_tier(SnapshotId=s1, TemporaryRestoreDays=1)
        poll(lambda: tier_status()["LastTieringOperationStatus"] == "temporary-restore-completed",
             "restore")
        t = time.monotonic() - t0
        rows.append(("restore (RestoreSnapshotTier)", t, f"{content_mib / t:.0f} MiB/s"))
        back = ec2.create_volume(SnapshotId=s1, AvailabilityZone="cairn-1b")["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[back], WaiterConfig=FAST)
        same_archive = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                                       str(first), c.nbd_uri(back)], capture_output=True).returncode == 0
    finally:
        c.stop()
    shutil.rmtree(c.data_dir, ignore_errors=True)
    same_capacity = capacity_tier(work, img, content_mib, rows)
    print(f"\nSnapshots that move: {SIZE_GIB} GiB volume, {content_mib:.0f} MiB of content "
          f"({os.environ.get('CAIRN_PROFILE', 'debug')} build, one disk, {os.cpu_count()} cores)")
    print(f"{'step':<38} {'seconds':>8}  result")
    for name, secs, what in rows:
        print(f"{name:<38} {secs:>8.2f}  {what}")
    print(f"Outpost copy restored identical: {same_edge}; archive restored identical: {same_archive}; "
          f"local and capacity-tier restores identical: {same_local} {same_capacity}")
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
