"""`cairn up` as people use it: a killed member comes back while the rest keep
serving, a member that keeps failing is left down without stopping the
cluster, and the mistakes a user can make end in one sentence and a hint."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from cluster import BIN, Cluster, wait_for
from util import GIB, make_image, nbd_compare, nbd_write, restore_and_compare

FAST = {"Delay": 1, "MaxAttempts": 300}


def pid_of(cluster, member):
    for line in (cluster.data_dir / member / "addr.toml").read_text().splitlines():
        if line.startswith("pid"):
            return int(line.split("=")[1])
    raise AssertionError(f"no pid for {member}")


def up_log(cluster):
    return (cluster.data_dir / "up.log").read_text(errors="replace")


def admin_status(cluster, *extra):
    r = subprocess.run([BIN, "admin", "status", "--data-dir", str(cluster.data_dir), *extra],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def own_cluster(tmp_path):
    c = Cluster(tmp_path / "data").start()
    yield c
    c.stop()


def test_killed_members_are_restarted_and_the_cluster_keeps_serving(own_cluster, tmp_path):
    c = own_cluster
    ec2 = c.client()
    zone = c.zones[0]
    vol = ec2.create_volume(AvailabilityZone=zone, Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    img = make_image(tmp_path / "a.img", GIB, [0, 7, 900])
    nbd_write(c.nbd_uri(vol), img)

    # A metadata member, a chunk node and the gateway, each SIGKILLed.
    for member in ["meta-2", "chunk-1b", "gateway"]:
        old = pid_of(c, member)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: f"{member} exited (SIGKILL); restarting in 1 s" in up_log(c),
                 timeout=30, what=f"{member}'s exit to be reported")
        wait_for(lambda: f"{member} is serving again" in up_log(c), timeout=90,
                 what=f"{member} to serve again")
        assert pid_of(c, member) != old
        # The rest kept serving; the gateway kept its address.
        assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "available"
    assert c.proc.poll() is None, "cairn up stopped"
    assert "Traceback" not in up_log(c) and "panicked" not in up_log(c)

    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)
    restored = ec2.create_volume(AvailabilityZone=c.zones[1], SnapshotId=snap)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[restored], WaiterConfig=FAST)
    code, out = nbd_compare(img, c.nbd_uri(restored))
    assert code == 0, out
    status = admin_status(c)
    assert status.count("leader") + status.count("follower") >= 3 and "down" not in status, status


def test_a_member_that_keeps_failing_is_left_down(own_cluster):
    c = own_cluster
    ec2 = c.client()
    # meta-3 cannot start any more: every restart exits at once.
    (c.data_dir / "meta-3" / "config.toml").write_text("node_id = \"not a number\"\n")
    os.kill(pid_of(c, "meta-3"), signal.SIGKILL)
    wait_for(lambda: "meta-3 exited with status 1; it exited 5 times in a row" in up_log(c),
             timeout=120, what="cairn up to give up on meta-3")
    assert "stays down (the rest of the cluster keeps running" in up_log(c)
    assert c.proc.poll() is None, "cairn up stopped"
    # Two members of three are a quorum: the cluster still writes.
    vol = ec2.create_volume(AvailabilityZone=c.zones[0], Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    status = admin_status(c)
    assert "down" in status and "leader" in status, status
    first = status.splitlines()[0]
    assert first.startswith("cluster: degraded: metadata member") and "does not answer" in first, status
    # The member's log holds the reason, not a panic.
    log = (c.data_dir / "meta-3" / "log").read_text(errors="replace")
    assert "cairn: parsing" in log and "panicked" not in log, log[-2000:]


def run_up(*args, timeout=120):
    return subprocess.run([BIN, "up", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "RUST_BACKTRACE": "0"})


def one_sentence_and_a_hint(r):
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 2 and lines[0].startswith("cairn: ") and lines[1].startswith("  hint: "), r.stderr
    assert "panicked" not in r.stderr and "backtrace" not in r.stderr.lower(), r.stderr
    return lines[0]


def test_user_mistakes_get_a_sentence_and_a_hint(own_cluster, tmp_path):
    c = own_cluster
    # The same data directory, while its cluster runs.
    line = one_sentence_and_a_hint(run_up("--data-dir", str(c.data_dir), "--http-port", "0", "--nbd-port", "0"))
    assert "is in use by another `cairn up`" in line
    # A port another program holds.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_sentence_and_a_hint(
            run_up("--data-dir", str(tmp_path / "other"), "--http-port", str(port), "--nbd-port", "0"))
        assert f"port {port} on 127.0.0.1" in line and "in use" in line
    # A directory that holds something else.
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpeg")
    line = one_sentence_and_a_hint(run_up("--data-dir", str(foreign), "--http-port", "0", "--nbd-port", "0"))
    assert "is not a Cairn data directory" in line
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"], "it was left as it was"
    # Names that do not fit.
    line = one_sentence_and_a_hint(run_up("--data-dir", str(tmp_path / "n"), "--region", "US East"))
    assert "region name" in line
    line = one_sentence_and_a_hint(run_up("--data-dir", str(tmp_path / "n"), "--account-id", "42"))
    assert "12 digits" in line


def test_an_existing_cluster_keeps_its_names(tmp_path):
    c = Cluster(tmp_path / "data", ["--region", "eu-west-3", "--zones", "eu-west-3a,eu-west-3c",
                                    "--account-id", "999988887777"]).start()
    try:
        ec2 = c.client()
        assert c.env["AWS_REGION"] == "eu-west-3" and c.zones == ["eu-west-3a", "eu-west-3c"]
        vol = ec2.create_volume(AvailabilityZone="eu-west-3c", Size=1)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
        arn = c.env["CAIRN_OUTPOST_ARN"]
        assert arn.startswith("arn:aws:outposts:eu-west-3:999988887777:outpost/op-"), arn
        s = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s], WaiterConfig=FAST)
        assert ec2.describe_snapshots(SnapshotIds=[s])["Snapshots"][0]["OwnerId"] == "999988887777"
    finally:
        c.stop()
    line = one_sentence_and_a_hint(run_up("--data-dir", str(c.data_dir), "--region", "us-east-1"))
    assert "created with region eu-west-3, not us-east-1" in line
    # Without names, it comes back as it was created.
    c.args = []
    c.start()
    try:
        assert c.env["AWS_REGION"] == "eu-west-3"
        assert c.client().describe_volumes(VolumeIds=[vol])["Volumes"][0]["AvailabilityZone"] == "eu-west-3c"
    finally:
        c.stop()


def test_copies_run_in_the_copy_memory_asked_for(tmp_path):
    """--copy-memory-mib reaches every chunk node; at the smallest cut (8
    blocks a batch) a snapshot of scattered data still restores exactly."""
    c = Cluster(tmp_path / "data", ["--copy-memory-mib", "18"]).start()
    try:
        configs = sorted(c.data_dir.glob("chunk-*/config.toml"))
        assert configs and all(f"copy_memory_bytes = {18 << 20}" in p.read_text() for p in configs)
        ec2 = c.client()
        vol = ec2.create_volume(AvailabilityZone=c.zones[0], Size=1)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
        img = make_image(tmp_path / "disk.img", GIB, list(range(0, 70)) + [1000, 2047])
        nbd_write(c.nbd_uri(vol), img)
        snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)
        restore_and_compare(ec2, c, snap, img, c.zones[-1])
    finally:
        c.stop()


def test_one_request_id_finds_its_path_through_every_process(tmp_path):
    c = Cluster(tmp_path / "data", ["--log-format", "json"],
                env={"CAIRN_LOG": "info,openraft=warn,h2=warn,tower_http=debug,cairn_proto::trace=debug"}).start()
    try:
        ec2 = c.client()
        vol = ec2.create_volume(AvailabilityZone=c.zones[0], Size=1)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
        # CreateSnapshot freezes the volume on its host before it answers:
        # the gateway, the metadata leader and a chunk node all serve it.
        r = ec2.create_snapshot(VolumeId=vol)
        rid = r["ResponseMetadata"]["RequestId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[r["SnapshotId"]], WaiterConfig=FAST)
    finally:
        c.stop()
    seen = {}
    for log in sorted(c.data_dir.glob("*/log")):
        for line in log.read_text().splitlines():
            obj = json.loads(line)  # every line is one JSON object
            assert {"timestamp", "level", "fields"} <= obj.keys(), line
            if any(s.get("request_id") == rid for s in obj.get("spans", [])):
                seen.setdefault(log.parent.name, []).append(obj)
    members = set(seen)
    assert "gateway" in members, members
    assert any(m.startswith("meta-") for m in members), members
    assert any(m.startswith("chunk-") for m in members), members
    served = [o for m, objs in seen.items() if m != "gateway" for o in objs]
    assert any(o["fields"].get("message") == "served" and o["fields"].get("rpc") for o in served), served


def addr_of(cluster, member, key):
    for line in (cluster.data_dir / member / "addr.toml").read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() == key:
            return v.strip().strip('"')
    raise AssertionError(f"no {key} for {member}")


def http_get(url):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def samples(text):
    import re
    out = {}
    for line in text.splitlines():
        m = re.match(r'^([a-z_]+)(\{[^}]*\})? (\S+)$', line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_every_member_serves_metrics_and_health(own_cluster, tmp_path):
    c = own_cluster
    ec2 = c.client()
    vol = ec2.create_volume(AvailabilityZone=c.zones[0], Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    nbd_write(c.nbd_uri(vol), make_image(tmp_path / "m.img", GIB, [1, 2, 3]))
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)

    members = sorted(p.parent.name for p in c.data_dir.glob("*/addr.toml") if p.parent.name != "gateway")
    assert len(members) == 9, members
    by_member = {}
    for m in members:
        base = "http://" + addr_of(c, m, "http")
        assert http_get(base + "/healthz")[0] == 200, m
        assert http_get(base + "/readyz")[0] == 200, m
        status, ctype, text = http_get(base + "/metrics")
        assert status == 200 and ctype.startswith("application/openmetrics-text"), (m, ctype)
        assert text.rstrip().endswith("# EOF"), m
        by_member[m] = samples(text)
    metas = [by_member[m] for m in members if m.startswith("meta-")]
    assert sum(s["cairn_metadata_raft_is_leader"] for s in metas) == 1, metas
    assert len({s["cairn_metadata_raft_term"] for s in metas}) == 1
    assert all(s["cairn_metadata_raft_has_leader"] == 1 and s["cairn_metadata_raft_applied_index"] > 0 for s in metas)
    assert all("cairn_metadata_raft_leader_changes_total" in s for s in metas)
    chunks = [by_member[m] for m in members if m.startswith("chunk-")]
    # 3 data blocks at RF 3 (plus manifest pages), all on the region's nodes.
    assert sum(s["cairn_chunk_store_chunks"] for s in chunks) >= 9, chunks
    assert sum(s["cairn_chunk_store_stored_bytes"] for s in chunks) >= 9 * 512 * 1024
    assert sum(s["cairn_chunk_volumes_hosted"] for s in chunks) == 1
    assert all(any(k.startswith("cairn_chunk_worker_state{") for k in s) for s in chunks)

    gateway = samples(http_get(c.endpoint + "/metrics")[2])
    # 3 distinct new blocks: 3 chunks sent after dedup, whatever the RF.
    assert gateway["cairn_gateway_copies_completed_total"] == 1, gateway
    assert gateway["cairn_gateway_copy_sent_chunks_total"] == 3, gateway
    last_steps = [v for k, v in gateway.items()
                  if k.startswith("cairn_gateway_worker_last_step_timestamp_seconds{")]
    assert last_steps and all(abs(time.time() - v) < 600 for v in last_steps), last_steps

    # The overview: a verdict, members, nodes by zone with their disks, workers.
    text = admin_status(c)
    assert text.splitlines()[0] == "cluster: healthy", text
    assert "metadata group: 3 members, leader" in text and "chunk nodes: 6" in text, text
    assert "free disk" in text and "gateway workers" in text, text
    overview = json.loads(admin_status(c, "--output", "json"))
    assert overview["health"] == "healthy" and overview["reasons"] == [], overview
    assert len(overview["metadata"]) == 3 and sum(m["id"] == m["leader"] for m in overview["metadata"]) == 1
    assert len(overview["nodes"]) == 6
    assert all(n["disk_total_bytes"] > 0 and 0 < n["disk_free_bytes"] <= n["disk_total_bytes"]
               for n in overview["nodes"]), overview["nodes"]
    assert {n["zone"] for n in overview["nodes"] if not n["zone"].startswith("op-")} == set(c.zones)
    assert any(w["name"] == "garbage collector" for w in overview["workers"])
