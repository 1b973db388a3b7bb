"""Whole-cluster properties: dedup in the chunk stores, and a restart that
brings back every volume, snapshot and byte. Each test runs its own cluster."""
import pytest

from cluster import Cluster, wait_for
from util import BLOCK, GIB, http_json, make_image, nbd_compare, nbd_write

FAST = {"Delay": 1, "MaxAttempts": 300}


@pytest.fixture
def own_cluster(tmp_path):
    c = Cluster(tmp_path / "data").start()
    yield c
    c.stop()


def chunk_stats(cluster):
    return {n["node_id"]: n for n in http_json(cluster.endpoint + "/_cairn/chunks")["nodes"]}


def snap_and_wait(ec2, vol):
    s = ec2.create_snapshot(VolumeId=vol)
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s["SnapshotId"]], WaiterConfig=FAST)
    return s["SnapshotId"]


def test_dedup_in_chunk_stores(own_cluster, tmp_path):
    ec2 = own_cluster.client()
    before = chunk_stats(own_cluster)
    regional = [n for n, s in before.items() if not s["zone"].startswith("op-")]
    zones = sorted({before[n]["zone"] for n in regional})
    assert len(regional) == 4 and zones == ["cairn-1a", "cairn-1b"], before

    def grown(after, nodes):
        return sum(after[n]["chunks"] - before[n]["chunks"] for n in nodes)

    # 24 distinct random blocks, 8 copies of one more block, zeros elsewhere.
    img = tmp_path / "a.img"
    make_image(img, GIB, range(0, 24))
    with open(img, "r+b") as f:
        same = bytes([7]) * BLOCK
        for i in range(100, 108):
            f.seek(i * BLOCK)
            f.write(same)
    v1 = ec2.create_volume(AvailabilityZone="cairn-1a", Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[v1], WaiterConfig=FAST)
    nbd_write(own_cluster.nbd_uri(v1), img)
    snap_and_wait(ec2, v1)
    after1 = chunk_stats(own_cluster)
    # 25 distinct data chunks + 1 manifest page + 1 manifest root; zero blocks
    # cost nothing. RF 3 over 4 region nodes: every object is on exactly 3
    # nodes, so the region holds 3 copies of each, and both AZs hold at least
    # one copy of each (replicas spread over AZs).
    distinct = 25 + 2
    assert grown(after1, regional) == 3 * distinct, (before, after1)
    for z in zones:
        in_zone = [n for n in regional if before[n]["zone"] == z]
        assert distinct <= grown(after1, in_zone) <= 2 * distinct, (z, before, after1)
    for n in regional:
        assert after1[n]["chunks"] - before[n]["chunks"] <= distinct, (n, before[n], after1[n])
    assert sum(after1[n]["bytes"] - before[n]["bytes"] for n in regional) >= 3 * 25 * BLOCK
    assert all(after1[n] == before[n] for n in before if n not in regional), "outpost got regional data"

    # A second volume with the same bytes, in the other AZ: no new chunk bytes at all.
    v2 = ec2.create_volume(AvailabilityZone="cairn-1b", Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[v2], WaiterConfig=FAST)
    nbd_write(own_cluster.nbd_uri(v2), img)
    snap_and_wait(ec2, v2)
    after2 = chunk_stats(own_cluster)
    for n in regional:
        assert after2[n]["chunks"] == after1[n]["chunks"] and after2[n]["bytes"] == after1[n]["bytes"]


def test_local_outpost_snapshot_stays_on_outpost(own_cluster, tmp_path):
    ec2 = own_cluster.client()
    arn = own_cluster.env["CAIRN_OUTPOST_ARN"]
    v = ec2.create_volume(AvailabilityZone="cairn-1a", Size=1, OutpostArn=arn)
    assert v["OutpostArn"] == arn
    ec2.get_waiter("volume_available").wait(VolumeIds=[v["VolumeId"]], WaiterConfig=FAST)
    img = make_image(tmp_path / "op.img", GIB, range(10, 14))
    nbd_write(own_cluster.nbd_uri(v["VolumeId"]), img)
    before = chunk_stats(own_cluster)
    s = ec2.create_snapshot(VolumeId=v["VolumeId"], OutpostArn=arn)
    assert s.get("OutpostArn") == arn
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s["SnapshotId"]], WaiterConfig=FAST)
    after = chunk_stats(own_cluster)
    for n, st in after.items():
        grew = st["chunks"] - before[n]["chunks"]
        assert grew == (6 if st["zone"].startswith("op-") else 0), (n, before[n], st)
    r = ec2.create_volume(AvailabilityZone="cairn-1a", SnapshotId=s["SnapshotId"], OutpostArn=arn)
    ec2.get_waiter("volume_available").wait(VolumeIds=[r["VolumeId"]], WaiterConfig=FAST)
    code, out = nbd_compare(img, own_cluster.nbd_uri(r["VolumeId"]))
    assert code == 0, out


def test_restart_brings_everything_back(tmp_path):
    c = Cluster(tmp_path / "data").start()
    try:
        ec2 = c.client()
        img = make_image(tmp_path / "r.img", GIB, [0, 1, 2, 500, 2047])
        vol = ec2.create_volume(AvailabilityZone="cairn-1b", Size=1,
                                TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "keep", "Value": "me"}]}])["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
        nbd_write(c.nbd_uri(vol), img)
        snap = snap_and_wait(ec2, vol)
    finally:
        c.stop()
    # Every member's log file is plain text: no terminal colour codes.
    logs = list((tmp_path / "data").glob("*/log")) + [tmp_path / "data" / "up.log"]
    assert len(logs) >= 11, logs  # 10 members and `cairn up` itself
    for log in logs:
        assert "\x1b[" not in log.read_text(errors="replace"), f"colour codes in {log}"
    c.start()
    try:
        ec2 = c.client()
        v = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]
        assert v["State"] == "available" and v["Tags"] == [{"Key": "keep", "Value": "me"}]
        s = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
        assert s["State"] == "completed"
        code, out = nbd_compare(img, c.nbd_uri(vol))
        assert code == 0, out
        r = ec2.create_volume(AvailabilityZone="cairn-1a", SnapshotId=snap)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[r], WaiterConfig=FAST)
        code, out = nbd_compare(img, c.nbd_uri(r))
        assert code == 0, out
    finally:
        c.stop()
