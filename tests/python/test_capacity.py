"""The capacity tier, as an operator sees it: chunk nodes configured with an
S3 bucket (a real S3 server, s3s-fs, started here) upload every sealed pack
and keep only open packs and a bounded read cache on disk (`du` stays small
while the bucket holds the replicas); a volume restored from a snapshot
whose chunks are all in the bucket reads back byte for byte (ranged reads,
a cache far smaller than the data); `cairn admin scrub --wait` finds a
record damaged in the bucket and repairs it from a replica; after a restart
(cold cache, packs known from their local records) the snapshot restores
again; deleting it and `cairn admin gc --wait` empties the bucket."""
import subprocess
from pathlib import Path

import pytest

from accounts import admin
from cluster import Cluster, wait_for
from s3server import S3Server
from test_scrub import rows
from util import GIB, make_image, nbd_write, restore_and_compare

FAST = {"Delay": 1, "MaxAttempts": 300}
MIB = 1 << 20
PACK_MIB = 4


@pytest.fixture
def s3(tmp_path):
    server = S3Server(tmp_path / "s3").start()
    yield server
    server.stop()


def admin_out(cluster, *args):
    r = admin(cluster, *args, timeout=600)
    return r.stdout + r.stderr


def local_packs(cluster):
    """(sealed pack files left on the nodes' disks, bytes `du` counts under their packs)."""
    dirs = [str(p) for p in cluster.data_dir.glob("chunk-*/data/packs")]
    assert len(dirs) == 6, dirs
    sealed = [p for d in dirs for p in Path(d).glob("*.pack")]
    out = subprocess.run(["du", "-s", "--block-size=1", *dirs], capture_output=True, text=True,
                         check=True).stdout
    return sealed, sum(int(line.split()[0]) for line in out.splitlines())


def test_chunks_live_in_the_bucket_and_come_back(s3, tmp_path):
    bucket = s3.bucket("cairn-packs")
    args, env = s3.capacity_args(bucket)
    cluster = Cluster(tmp_path / "data", [*args, "--pack-mib", str(PACK_MIB),
                                          "--capacity-cache-mib", "8"], env).start()
    try:
        ec2 = cluster.client()
        zone_a, zone_b = cluster.zones[:2]
        vol = ec2.create_volume(AvailabilityZone=zone_a, Size=1)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
        img = make_image(tmp_path / "disk.img", GIB, list(range(0, 2048, 8)))  # 128 MiB
        nbd_write(cluster.nbd_uri(vol), img)
        snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)

        # Every sealed pack leaves the disks for the bucket.
        wait_for(lambda: not local_packs(cluster)[0], timeout=120,
                 what="every sealed pack to be uploaded")
        stored = sum(s3.objects(bucket).values())
        _, on_disk = local_packs(cluster)
        # 128 MiB at RF 3, less at most one open pack per node.
        assert stored >= 3 * 128 * MIB - 6 * (PACK_MIB + 1) * MIB, stored
        assert on_disk <= 6 * (PACK_MIB + 2) * MIB, on_disk

        # Restored from the bucket through an 8 MiB cache per node.
        restore_and_compare(ec2, cluster, snap, img, zone_b)

        # A record damaged in the bucket: scrub finds it and repairs it.
        key = sorted(s3.objects(bucket))[0]
        obj = s3.root / bucket / key
        with open(obj, "r+b") as f:
            f.seek(8192)
            f.write(b"rot in the bucket")
        out = admin_out(cluster, "scrub", "--wait")
        found = [r[1:] for r in rows(out).values() if r[1]]
        assert found == [(1, 1, 0)], out  # (found, repaired, unrepairable) on one node
    finally:
        cluster.stop()

    # Restarted: the nodes know their packs from their local records.
    cluster.start()
    try:
        ec2 = cluster.client()
        restore_and_compare(ec2, cluster, snap, img, zone_a)
        for v in ec2.describe_volumes()["Volumes"]:
            ec2.delete_volume(VolumeId=v["VolumeId"])
        ec2.delete_snapshot(SnapshotId=snap)
        admin_out(cluster, "gc", "--wait")
        left = sum(s3.objects(bucket).values())
        assert left < stored // 10, (stored, left)
    finally:
        cluster.stop()
