"""Deletes that give space back, as an operator sees them: boto3 deletes
snapshots, `cairn admin snapshot-usage` says what a delete would free,
`cairn admin gc --wait` frees it, `du` of the chunk nodes' data falls, and
the snapshots left restore byte for byte."""
import subprocess

import pytest

from cluster import BIN, Cluster
from util import GIB, make_image, nbd_compare, nbd_write

FAST = {"Delay": 1, "MaxAttempts": 300}


@pytest.fixture
def own_cluster(tmp_path):
    c = Cluster(tmp_path / "data").start()
    yield c
    c.stop()


def cairn(cluster, *args):
    r = subprocess.run(
        [BIN, "admin", *args, "--data-dir", str(cluster.data_dir)],
        capture_output=True, text=True, timeout=600,
    )
    return r.returncode, r.stdout + r.stderr


def du_packs(cluster):
    """Bytes on disk under every chunk node's data directory (what `du` counts)."""
    dirs = [str(p) for p in cluster.data_dir.glob("chunk-*/data")]
    assert len(dirs) == 6, dirs
    out = subprocess.run(["du", "-s", "--block-size=1", *dirs], capture_output=True, text=True,
                         check=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines())


def snap(ec2, vol):
    s = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s], WaiterConfig=FAST)
    return s


def test_admin_gc_gives_space_back_and_keeps_what_is_needed(own_cluster, tmp_path):
    ec2 = own_cluster.client()
    vol = ec2.create_volume(AvailabilityZone="cairn-1a", Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    uri = own_cluster.nbd_uri(vol)
    old = make_image(tmp_path / "old.img", GIB, range(0, 64))
    nbd_write(uri, old)
    s_old = snap(ec2, vol)
    # What stays: a small snapshot of another volume. Its chunks share packs
    # with the old snapshot's, so once those are dead the packs are mostly
    # dead and compaction gives them back whatever placement did. (Beside a
    # snapshot as large as the one deleted, a pack is about half dead, and
    # whether it is rewritten would turn on where placement put each block.)
    vol2 = ec2.create_volume(AvailabilityZone="cairn-1a", Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol2], WaiterConfig=FAST)
    new = make_image(tmp_path / "new.img", GIB, range(0, 8))
    nbd_write(own_cluster.nbd_uri(vol2), new)
    s_new = snap(ec2, vol2)

    code, out = cairn(own_cluster, "snapshot-usage", s_old)
    assert code == 0, out
    assert "unique to it (freed by deleting it now): 32.0 MiB in 64 chunks" in out, out
    code, out = cairn(own_cluster, "snapshot-usage", "snap-0123456789abcdef0")
    assert code != 0 and "does not exist" in out, out
    code, out = cairn(own_cluster, "snapshot-usage", "not-a-snapshot")
    assert code != 0 and "is not a snapshot id" in out, out

    before = du_packs(own_cluster)
    ec2.delete_snapshot(SnapshotId=s_old)
    code, out = cairn(own_cluster, "gc", "--wait")
    assert code == 0, out
    assert "garbage collection pass" in out and "deleted" in out, out
    after = du_packs(own_cluster)
    # 64 blocks at RF 3 (96 MiB) were only the old snapshot's, with its root
    # and page; the packs holding them are mostly dead, so most comes back.
    assert "deleted 198 (96.0 MiB)" in out, out
    assert before - after >= 64 << 20, (before, after, out)

    # The snapshot left restores byte for byte.
    restored = ec2.create_volume(AvailabilityZone="cairn-1b", SnapshotId=s_new)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[restored], WaiterConfig=FAST)
    rc, diff = nbd_compare(new, own_cluster.nbd_uri(restored))
    assert rc == 0, diff
