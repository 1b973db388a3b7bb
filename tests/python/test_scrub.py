"""Scrub as an operator runs it: `cairn admin scrub --wait` re-reads every
stored chunk on every chunk node, checks it against its hash and prints per
node what it checked, found and repaired; a record rotted on disk is found
and rebuilt from a replica."""
import re
import subprocess

import pytest

from cluster import BIN, Cluster
from util import GIB, make_image, nbd_write

FAST = {"Delay": 1, "MaxAttempts": 300}


@pytest.fixture
def own_cluster(tmp_path):
    c = Cluster(tmp_path / "data").start()
    yield c
    c.stop()


def scrub(cluster, *args):
    r = subprocess.run(
        [BIN, "admin", "scrub", *args, "--data-dir", str(cluster.data_dir)],
        capture_output=True, text=True, timeout=600,
    )
    return r.returncode, r.stdout + r.stderr


def rows(out):
    """The per-node rows of the table: node -> (records, found, repaired, unrepairable)."""
    table = {}
    for line in out.splitlines():
        m = re.match(r"\s+(chunk-\S+)\s+(\d+)\s+(\d+)\s+[\d.]+ MiB\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", line)
        if m:
            table[m.group(1)] = tuple(int(m.group(i)) for i in (3, 4, 5, 6))
    return table


def test_admin_scrub_checks_every_node_and_reports_per_node(own_cluster, tmp_path):
    ec2 = own_cluster.client()
    vol = ec2.create_volume(AvailabilityZone="cairn-1a", Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    nbd_write(own_cluster.nbd_uri(vol), make_image(tmp_path / "img", GIB, range(0, 16)))
    s = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s], WaiterConfig=FAST)

    code, out = scrub(own_cluster, "--wait")
    assert code == 0, out
    assert "records" in out and "repaired" in out and "unrepairable" in out, out
    table = rows(out)
    assert len(table) == 6, out
    assert sum(r[0] for r in table.values()) >= 16, out
    assert all(r[1] == 0 for r in table.values()), out
    assert re.search(r"scrubbed 6 node\(s\): checked \d+ records", out), out

    code, out = scrub(own_cluster)
    assert code == 0 and "scrub pass" in out and "started" in out, out
    code, out = scrub(own_cluster, "--bytes-per-sec", "fast")
    assert code != 0 and "invalid value" in out, out
