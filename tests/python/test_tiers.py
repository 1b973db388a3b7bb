"""The archive tier with boto3: ModifySnapshotTier archives a snapshot's
full content into the object store (a directory under the data directory
by default; an S3 bucket on a real S3 server, moto's, started here) in
large pack objects, verified, and lets its chunks go, so garbage collection
frees them; a volume cannot be made from it until RestoreSnapshotTier brings
it back (temporary, with restoreExpiryTime; the period changed; made
permanent, which deletes the archive copy); DescribeSnapshotTierStatus with
filters and paging; deleting an archived snapshot deletes its archive copy;
bad input gets EC2's codes and changes nothing."""
import subprocess
import uuid

import pytest

from accounts import code_of
from cluster import BIN, Cluster, wait_for
from util import AZ_A, E2E_ARGS, GIB, make_image, nbd_write, restore_and_compare

FAST = {"Delay": 1, "MaxAttempts": 120}


def tier_status(ec2, snap):
    items = ec2.describe_snapshot_tier_status(
        Filters=[{"Name": "snapshot-id", "Values": [snap]}])["SnapshotTierStatuses"]
    return items[0] if items else None


def wait_tier(ec2, snap, status):
    def reached():
        s = tier_status(ec2, snap)
        assert s is None or not s["LastTieringOperationStatus"].endswith("failed"), s
        return s if s and s["LastTieringOperationStatus"] == status else None
    return wait_for(reached, timeout=180, interval=0.2, what=f"{snap} to reach {status}")


def gc(cluster):
    r = subprocess.run([BIN, "admin", "gc", "--wait", "--data-dir", str(cluster.data_dir)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def du_chunks(cluster):
    """Bytes on disk under every chunk node's data directory (what `du` counts)."""
    dirs = [str(p) for p in cluster.data_dir.glob("chunk-*/data")]
    out = subprocess.run(["du", "-s", "--block-size=1", *dirs], capture_output=True, text=True,
                         check=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines())


def archive_cycle(cluster, tmp_path, objects_in_store):
    """Archive, collect, refuse a restore-less volume, restore temporarily,
    change the period, make it permanent: bytes equal at every read."""
    ec2 = cluster.client("ec2")
    vol = ec2.create_volume(AvailabilityZone=AZ_A, Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    img = make_image(tmp_path / "disk.img", GIB, list(range(0, 2048, 8)))  # 128 MiB
    nbd_write(cluster.nbd_uri(vol), img)
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)
    gc(cluster)
    before = du_chunks(cluster)

    r = ec2.modify_snapshot_tier(SnapshotId=snap, StorageTier="archive")
    assert r["SnapshotId"] == snap and r["TieringStartTime"]
    done = wait_tier(ec2, snap, "archival-completed")
    assert done["StorageTier"] == "archive" and done["LastTieringProgress"] == 100
    assert "ArchivalCompleteTime" in done
    d = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert d["StorageTier"] == "archive" and "RestoreExpiryTime" not in d
    packs = objects_in_store(snap)
    assert 5 <= len(packs) <= 6, packs  # 128 MiB in 32 MiB packs, and the index
    assert all(size > 0 for size in packs.values())

    # Its chunks went: only it needed them.
    gc(cluster)
    after = du_chunks(cluster)
    assert after < before - 2 * 128 * 2**20, (before, after)  # 128 MiB at RF 3 freed

    # Archived, it cannot back a volume, nor be archived again.
    code = code_of(lambda: ec2.create_volume(SnapshotId=snap, AvailabilityZone=AZ_A))
    assert code and code[0] == "IncorrectState", code
    code = code_of(lambda: ec2.modify_snapshot_tier(SnapshotId=snap, StorageTier="archive"))
    assert code and code[0] == "IncorrectState", code
    # Nor be read through the EBS direct APIs.
    ebs = cluster.client("ebs")
    for call in (lambda: ebs.list_snapshot_blocks(SnapshotId=snap),
                 lambda: ebs.list_changed_blocks(SecondSnapshotId=snap)):
        code = code_of(call)
        assert code == ("ValidationException", 400), code

    r = ec2.restore_snapshot_tier(SnapshotId=snap, TemporaryRestoreDays=2)
    assert (r["RestoreDuration"], r["IsPermanentRestore"]) == (2, False)
    wait_tier(ec2, snap, "temporary-restore-completed")
    d = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert d["StorageTier"] == "archive" and "RestoreExpiryTime" in d
    first_expiry = d["RestoreExpiryTime"]
    restore_and_compare(ec2, cluster, snap, img, AZ_A)
    gc(cluster)  # a restored snapshot keeps its chunks
    # A longer period, counted from now.
    ec2.restore_snapshot_tier(SnapshotId=snap, TemporaryRestoreDays=30)
    d = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert d["RestoreExpiryTime"] > first_expiry

    # Permanent: standard again, the archive copy deleted.
    r = ec2.restore_snapshot_tier(SnapshotId=snap, PermanentRestore=True)
    assert r["IsPermanentRestore"] is True
    s = wait_tier(ec2, snap, "permanent-restore-completed")
    assert s["StorageTier"] == "standard"
    wait_for(lambda: not objects_in_store(snap), timeout=60, what="the archive copy to go")
    gc(cluster)
    restore_and_compare(ec2, cluster, snap, img, AZ_A)
    return snap


def test_archive_in_the_data_directory(cluster, tmp_path):
    root = cluster.data_dir / "archive" / "snapshots"

    def objects(snap):
        d = root / snap
        return {p.name: p.stat().st_size for p in d.iterdir()} if d.exists() else {}

    archive_cycle(cluster, tmp_path, objects)


def test_tier_requests_check_their_input(cluster, ec2):
    vol = ec2.create_volume(AvailabilityZone=AZ_A, Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)
    missing = "snap-0" + uuid.uuid4().hex[:16]
    before = ec2.describe_snapshot_tier_status()["SnapshotTierStatuses"]
    bad = [
        (lambda: ec2.modify_snapshot_tier(SnapshotId=missing), "InvalidSnapshot.NotFound"),
        (lambda: ec2.modify_snapshot_tier(SnapshotId="snap-x"), "InvalidSnapshotID.Malformed"),
        (lambda: ec2.modify_snapshot_tier(SnapshotId=snap, StorageTier="cold"),
         "InvalidParameterValue"),
        (lambda: ec2.restore_snapshot_tier(SnapshotId=snap, TemporaryRestoreDays=2),
         "IncorrectState"),
        (lambda: ec2.restore_snapshot_tier(SnapshotId=snap, TemporaryRestoreDays=0),
         "InvalidParameterValue"),
        (lambda: ec2.restore_snapshot_tier(SnapshotId=snap, TemporaryRestoreDays=181),
         "InvalidParameterValue"),
        (lambda: ec2.restore_snapshot_tier(SnapshotId=snap, TemporaryRestoreDays=2,
                                           PermanentRestore=True),
         "InvalidParameterCombination"),
        (lambda: ec2.describe_snapshot_tier_status(
            Filters=[{"Name": "nonsense", "Values": ["x"]}]), "InvalidParameterValue"),
    ]
    for call, want in bad:
        got = code_of(call)
        assert got and got[0] == want, (want, got)
    # Shared, it cannot be archived.
    ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                  OperationType="add", UserIds=["111122223333"])
    got = code_of(lambda: ec2.modify_snapshot_tier(SnapshotId=snap))
    assert got and got[0] == "OperationNotPermitted", got
    assert ec2.describe_snapshot_tier_status()["SnapshotTierStatuses"] == before
    # A pending snapshot cannot be archived either.
    pending = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    got = code_of(lambda: ec2.modify_snapshot_tier(SnapshotId=pending))
    state = ec2.describe_snapshots(SnapshotIds=[pending])["Snapshots"][0]["State"]
    assert state != "pending" or (got and got[0] == "IncorrectState"), (state, got)


def test_describe_tier_status_pages(cluster, ec2):
    vol = ec2.create_volume(AvailabilityZone=AZ_A, Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    snaps = []
    for _ in range(6):
        s = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s], WaiterConfig=FAST)
        ec2.modify_snapshot_tier(SnapshotId=s)
        snaps.append(s)
    for s in snaps:
        wait_tier(ec2, s, "archival-completed")
    seen, token = [], None
    while True:
        kw = {"MaxResults": 5, "Filters": [{"Name": "volume-id", "Values": [vol]}]}
        if token:
            kw["NextToken"] = token
        r = ec2.describe_snapshot_tier_status(**kw)
        assert len(r["SnapshotTierStatuses"]) <= 5
        seen += [x["SnapshotId"] for x in r["SnapshotTierStatuses"]]
        token = r.get("NextToken")
        if not token:
            break
    assert sorted(seen) == sorted(snaps)
    op = ec2.describe_snapshot_tier_status(Filters=[
        {"Name": "last-tiering-operation", "Values": ["archival-completed"]},
        {"Name": "snapshot-id", "Values": snaps[:2]}])["SnapshotTierStatuses"]
    assert sorted(x["SnapshotId"] for x in op) == sorted(snaps[:2])

    # Deleting an archived snapshot deletes its archive copy, then its status.
    root = cluster.data_dir / "archive" / "snapshots"
    assert all((root / s / "index").exists() for s in snaps)
    for s in snaps:
        ec2.delete_snapshot(SnapshotId=s)
    wait_for(lambda: not any((root / s).exists() and any((root / s).iterdir()) for s in snaps),
             timeout=60, what="the archive copies to go")
    left = ec2.describe_snapshot_tier_status(
        Filters=[{"Name": "volume-id", "Values": [vol]}])["SnapshotTierStatuses"]
    assert left == [], left


@pytest.fixture
def s3_server():
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_archive_in_an_s3_bucket(s3_server, tmp_path):
    import boto3
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id="archive", aws_secret_access_key="archive-secret")
    s3.create_bucket(Bucket="cairn-archive")
    c = Cluster(tmp_path / "data", [*E2E_ARGS, "--archive-s3-endpoint", s3_server,
                                    "--archive-s3-bucket", "cairn-archive"],
                env={"CAIRN_ARCHIVE_S3_ACCESS_KEY_ID": "archive",
                     "CAIRN_ARCHIVE_S3_SECRET_ACCESS_KEY": "archive-secret"}).start()
    try:
        def objects(snap):
            r = s3.list_objects_v2(Bucket="cairn-archive", Prefix=f"snapshots/{snap}/")
            return {o["Key"]: o["Size"] for o in r.get("Contents", [])}
        archive_cycle(c, tmp_path, objects)
        assert not (c.data_dir / "archive").exists(), "the S3 cluster wrote a local archive"
    finally:
        c.stop()
