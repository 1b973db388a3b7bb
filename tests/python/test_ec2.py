"""EC2 snapshots and volumes, end to end, with unmodified boto3, the AWS CLI
and qemu-img over NBD against a `cairn up` cluster."""
import json
import subprocess
import uuid

import pytest
from botocore.exceptions import ClientError

from util import (AZ_A, AZ_B, BLOCK, E2E_ACCOUNT, GIB, error_code, make_image, nbd_compare,
                  nbd_write, raw_query)

FAST = {"Delay": 1, "MaxAttempts": 300}


def tags(resource, **kv):
    return [{"ResourceType": resource, "Tags": [{"Key": k, "Value": v} for k, v in kv.items()]}]


def new_volume(ec2, az=AZ_A, size=1, **kv):
    v = ec2.create_volume(AvailabilityZone=az, Size=size, VolumeType="gp3",
                          TagSpecifications=tags("volume", **kv) if kv else [])
    ec2.get_waiter("volume_available").wait(VolumeIds=[v["VolumeId"]], WaiterConfig=FAST)
    return v["VolumeId"]


def snapshot(ec2, vol, description="", **kv):
    s = ec2.create_snapshot(VolumeId=vol, Description=description,
                            TagSpecifications=tags("snapshot", **kv) if kv else [])
    return s


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_create_describe_volume(ec2):
    v = ec2.create_volume(AvailabilityZone=AZ_A, Size=1, VolumeType="gp3",
                          TagSpecifications=tags("volume", Name="first", team="storage"))
    assert v["VolumeId"].startswith("vol-") and len(v["VolumeId"]) == 21
    assert v["Size"] == 1 and v["AvailabilityZone"] == AZ_A and v["VolumeType"] == "gp3"
    assert {t["Key"]: t["Value"] for t in v["Tags"]} == {"Name": "first", "team": "storage"}
    ec2.get_waiter("volume_available").wait(VolumeIds=[v["VolumeId"]], WaiterConfig=FAST)
    d = ec2.describe_volumes(VolumeIds=[v["VolumeId"]])["Volumes"][0]
    assert d["State"] == "available"
    assert d["CreateTime"].year >= 2026


def test_snapshot_restore_byte_for_byte(ec2, cluster, tmp_path):
    vol = new_volume(ec2, Name="source")
    # Random blocks, a block of repeated pages, and long zero runs between them.
    blocks = list(range(0, 40)) + list(range(600, 610)) + [2047]
    img = make_image(tmp_path / "disk.img", GIB, blocks)
    with open(img, "r+b") as f:  # one block of repeated 4 KiB pages
        f.seek(1000 * BLOCK)
        f.write(bytes(range(256)) * 16 * 128)
    nbd_write(cluster.nbd_uri(vol), img)

    s = snapshot(ec2, vol, "first snapshot", Name="snap1")
    assert s["State"] == "pending"
    assert s["SnapshotId"].startswith("snap-") and s["VolumeId"] == vol
    assert s["VolumeSize"] == 1 and s["Description"] == "first snapshot"
    assert {t["Key"]: t["Value"] for t in s["Tags"]} == {"Name": "snap1"}
    # Writes sent after CreateSnapshot returned must not show up in the snapshot,
    # even while its copy is still running.
    later = make_image(tmp_path / "later.img", GIB, [5, 700])
    nbd_write(cluster.nbd_uri(vol), later)
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s["SnapshotId"]], WaiterConfig=FAST)
    d = ec2.describe_snapshots(SnapshotIds=[s["SnapshotId"]])["Snapshots"][0]
    assert d["State"] == "completed" and d["Progress"] == "100%"
    assert d["OwnerId"] == E2E_ACCOUNT

    # The AWS CLI's waiter works too.
    r = subprocess.run(["aws", "ec2", "wait", "snapshot-completed", "--snapshot-ids", s["SnapshotId"]],
                       env=cluster.aws_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr

    restored = ec2.create_volume(SnapshotId=s["SnapshotId"], AvailabilityZone=AZ_B)
    assert restored["SnapshotId"] == s["SnapshotId"] and restored["Size"] == 1
    ec2.get_waiter("volume_available").wait(VolumeIds=[restored["VolumeId"]], WaiterConfig=FAST)
    code, out = nbd_compare(img, cluster.nbd_uri(restored["VolumeId"]))
    assert code == 0, out
    code, out = nbd_compare(later, cluster.nbd_uri(vol))
    assert code == 0, out


def test_describe_filters_and_paging(ec2, cluster):
    marker = uuid.uuid4().hex[:8]
    vol = new_volume(ec2, Name=f"paging-{marker}")
    other = new_volume(ec2, az=AZ_B, Name=f"other-{marker}")
    ids = []
    for i in range(7):
        s = snapshot(ec2, vol, f"page {marker} {i}", batch=marker, parity=str(i % 2))
        ids.append(s["SnapshotId"])
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s["SnapshotId"]], WaiterConfig=FAST)

    def ids_of(**kw):
        out = []
        for page in ec2.get_paginator("describe_snapshots").paginate(**kw):
            out += [s["SnapshotId"] for s in page["Snapshots"]]
        return out

    assert sorted(ids_of(Filters=[{"Name": "volume-id", "Values": [vol]}])) == sorted(ids)
    assert sorted(ids_of(OwnerIds=["self"], Filters=[{"Name": "tag:batch", "Values": [marker]}])) == sorted(ids)
    assert sorted(ids_of(Filters=[{"Name": "tag:parity", "Values": ["1"]},
                                  {"Name": "tag:batch", "Values": [marker]}])) == sorted(ids[1::2])
    assert sorted(ids_of(Filters=[{"Name": "tag-key", "Values": ["batch"]},
                                  {"Name": "volume-id", "Values": [vol]}])) == sorted(ids)
    assert ids_of(Filters=[{"Name": "description", "Values": [f"page {marker} 3"]}]) == [ids[3]]
    assert sorted(ids_of(Filters=[{"Name": "status", "Values": ["completed"]},
                                  {"Name": "volume-id", "Values": [vol]}])) == sorted(ids)
    assert ids_of(Filters=[{"Name": "status", "Values": ["error"]}, {"Name": "volume-id", "Values": [vol]}]) == []
    assert ids_of(OwnerIds=["999999999999"], Filters=[{"Name": "volume-id", "Values": [vol]}]) == []

    # MaxResults/NextToken: pages of 5 cover everything exactly once.
    seen, token, pages = [], None, 0
    while True:
        kw = {"MaxResults": 5, "Filters": [{"Name": "volume-id", "Values": [vol]}]}
        if token:
            kw["NextToken"] = token
        r = ec2.describe_snapshots(**kw)
        assert len(r["Snapshots"]) <= 5
        seen += [s["SnapshotId"] for s in r["Snapshots"]]
        pages += 1
        token = r.get("NextToken")
        if not token:
            break
    assert sorted(seen) == sorted(ids) and pages == 2

    vols = []
    for page in ec2.get_paginator("describe_volumes").paginate(PaginationConfig={"PageSize": 5}):
        vols += [v["VolumeId"] for v in page["Volumes"]]
    assert vol in vols and other in vols and len(vols) == len(set(vols))
    byname = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [f"other-{marker}"]}])["Volumes"]
    assert [v["VolumeId"] for v in byname] == [other]
    inb = ec2.describe_volumes(Filters=[{"Name": "availability-zone", "Values": [AZ_B]},
                                        {"Name": "volume-id", "Values": [vol, other]}])["Volumes"]
    assert [v["VolumeId"] for v in inb] == [other]
    avail = ec2.describe_volumes(Filters=[{"Name": "status", "Values": ["available"]},
                                          {"Name": "volume-id", "Values": [vol]}])["Volumes"]
    assert len(avail) == 1


def test_tags_on_volumes_and_snapshots(ec2):
    vol = new_volume(ec2)
    s = snapshot(ec2, vol)
    ec2.create_tags(Resources=[vol, s["SnapshotId"]], Tags=[{"Key": "env", "Value": "prod"}, {"Key": "empty", "Value": ""}])
    r = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vol, s["SnapshotId"]]}])["Tags"]
    got = sorted((t["ResourceId"], t["ResourceType"], t["Key"], t["Value"]) for t in r)
    assert got == sorted([(vol, "volume", "env", "prod"), (vol, "volume", "empty", ""),
                          (s["SnapshotId"], "snapshot", "env", "prod"), (s["SnapshotId"], "snapshot", "empty", "")])
    ec2.create_tags(Resources=[vol], Tags=[{"Key": "env", "Value": "dev"}])
    vtags = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Tags"]
    assert sorted(t["Key"] + "=" + t["Value"] for t in vtags) == ["empty=", "env=dev"]
    # A value that does not match leaves the tag; a bare key removes it.
    ec2.delete_tags(Resources=[vol], Tags=[{"Key": "env", "Value": "prod"}])
    assert "env" in {t["Key"] for t in ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Tags"]}
    ec2.delete_tags(Resources=[vol, s["SnapshotId"]], Tags=[{"Key": "env"}])
    r = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vol, s["SnapshotId"]]}, {"Name": "key", "Values": ["env"]}])
    assert r["Tags"] == []
    ec2.delete_tags(Resources=[s["SnapshotId"]])
    d = ec2.describe_snapshots(SnapshotIds=[s["SnapshotId"]])["Snapshots"][0]
    assert d.get("Tags", []) == []
    with pytest.raises(ClientError) as e:
        ec2.create_tags(Resources=["vol-0000000000000dead"], Tags=[{"Key": "a", "Value": "b"}])
    assert code_of(e) == "InvalidVolume.NotFound"
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s["SnapshotId"]], WaiterConfig=FAST)


def test_delete_snapshot_and_volume(ec2):
    vol = new_volume(ec2)
    s = snapshot(ec2, vol)
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s["SnapshotId"]], WaiterConfig=FAST)
    ec2.delete_snapshot(SnapshotId=s["SnapshotId"])
    with pytest.raises(ClientError) as e:
        ec2.describe_snapshots(SnapshotIds=[s["SnapshotId"]])
    assert code_of(e) == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.delete_snapshot(SnapshotId=s["SnapshotId"])
    assert code_of(e) == "InvalidSnapshot.NotFound"
    ec2.delete_volume(VolumeId=vol)
    ec2.get_waiter("volume_deleted").wait(VolumeIds=[vol], WaiterConfig=FAST)
    with pytest.raises(ClientError) as e:
        ec2.describe_volumes(VolumeIds=[vol])
    assert code_of(e) == "InvalidVolume.NotFound"


def test_dry_run_changes_nothing(ec2):
    vol = new_volume(ec2)
    before_v = len(ec2.describe_volumes()["Volumes"])
    before_s = len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
    calls = [
        lambda: ec2.create_volume(AvailabilityZone=AZ_A, Size=1, DryRun=True),
        lambda: ec2.create_snapshot(VolumeId=vol, DryRun=True),
        lambda: ec2.delete_volume(VolumeId=vol, DryRun=True),
        lambda: ec2.create_tags(Resources=[vol], Tags=[{"Key": "dry", "Value": "run"}], DryRun=True),
        lambda: ec2.describe_volumes(DryRun=True),
    ]
    for call in calls:
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == "DryRunOperation"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        assert e.value.response["ResponseMetadata"].get("RequestId")
    assert len(ec2.describe_volumes()["Volumes"]) == before_v
    assert len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) == before_s
    assert all(t["Key"] != "dry" for t in ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0].get("Tags", []))


@pytest.mark.parametrize("call,code", [
    (lambda c: c.describe_volumes(VolumeIds=["vol-0123456789abcdef0"]), "InvalidVolume.NotFound"),
    (lambda c: c.describe_snapshots(SnapshotIds=["snap-0123456789abcdef0"]), "InvalidSnapshot.NotFound"),
    (lambda c: c.create_snapshot(VolumeId="vol-0123456789abcdef0"), "InvalidVolume.NotFound"),
    (lambda c: c.delete_volume(VolumeId="vol-0123456789abcdef0"), "InvalidVolume.NotFound"),
    (lambda c: c.delete_snapshot(SnapshotId="snap-0123456789abcdef0"), "InvalidSnapshot.NotFound"),
    (lambda c: c.create_volume(SnapshotId="snap-0123456789abcdef0", AvailabilityZone=AZ_A), "InvalidSnapshot.NotFound"),
    (lambda c: c.create_volume(AvailabilityZone="us-east-1z", Size=1), "InvalidParameterValue"),
    (lambda c: c.create_volume(AvailabilityZone=AZ_A), "MissingParameter"),
    (lambda c: c.create_volume(AvailabilityZone=AZ_A, Size=0, VolumeType="gp3"), "InvalidParameterValue"),
    (lambda c: c.describe_snapshots(MaxResults=2), "InvalidParameterValue"),
    # The short legacy id form (8 hex digits) is well formed: unknown, not malformed.
    (lambda c: c.describe_volumes(VolumeIds=["vol-0123abcd"]), "InvalidVolume.NotFound"),
    (lambda c: c.describe_snapshots(SnapshotIds=["snap-0123abcd"]), "InvalidSnapshot.NotFound"),
    (lambda c: c.delete_volume(VolumeId="vol-89abcdef"), "InvalidVolume.NotFound"),
    (lambda c: c.delete_snapshot(SnapshotId="snap-89abcdef"), "InvalidSnapshot.NotFound"),
    (lambda c: c.create_snapshot(VolumeId="vol-0000beef"), "InvalidVolume.NotFound"),
    (lambda c: c.create_volume(SnapshotId="snap-0000beef", AvailabilityZone=AZ_A), "InvalidSnapshot.NotFound"),
    (lambda c: c.create_tags(Resources=["snap-0000beef"], Tags=[{"Key": "k", "Value": "v"}]), "InvalidSnapshot.NotFound"),
    (lambda c: c.delete_tags(Resources=[], Tags=[{"Key": "a"}]), "MissingParameter"),
])
def test_bad_calls_get_aws_errors(ec2, call, code):
    before = (len(ec2.describe_volumes()["Volumes"]), len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]))
    with pytest.raises(ClientError) as e:
        call(ec2)
    assert code_of(e) == code, e.value.response
    assert e.value.response["ResponseMetadata"].get("RequestId")
    assert 400 <= e.value.response["ResponseMetadata"]["HTTPStatusCode"] < 500
    after = (len(ec2.describe_volumes()["Volumes"]), len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]))
    assert before == after


@pytest.mark.parametrize("body,code", [
    ("Action=CreateSnapshot&Version=2016-11-15", "MissingParameter"),
    ("Action=NoSuchThing&Version=2016-11-15", "InvalidAction"),
    ("Version=2016-11-15", "MissingAction"),
    ("Action=CreateVolume&Version=2016-11-15&AvailabilityZone=us-east-1a&Size=abc", "InvalidParameterValue"),
    ("Action=DescribeVolumes&Version=2016-11-15&MaxResults=x", "InvalidParameterValue"),
    ("Action=CreateVolume&Version=2016-11-15&AvailabilityZone=us-east-1a&Size=1&DryRun=maybe", "InvalidParameterValue"),
    ("Action=DeleteTags&Version=2016-11-15&Tag.1.Key=a", "MissingParameter"),
    ("Action=DescribeSnapshots&Version=2016-11-15&SnapshotId.1=nonsense", "InvalidSnapshotID.Malformed"),
    ("Action=DescribeVolumes&Version=2016-11-15&NextToken=%%%", "InvalidParameterValue"),
    ("%ff%fe=\x00&&&==", "MissingAction"),
])
def test_malformed_requests(cluster, body, code):
    status, root, text = raw_query(cluster, body)
    got, rid = error_code(root)
    assert got == code, text
    assert rid, text
    assert status == 400, text


def test_wrong_region_is_refused(cluster):
    status, root, text = raw_query(cluster, "Action=DescribeVolumes&Version=2016-11-15", region="cairn-1")
    assert error_code(root)[0] == "AuthFailure", text
    assert status in (401, 403)


def test_aws_cli_end_to_end(cluster):
    def aws(*args):
        r = subprocess.run(["aws", "ec2", *args, "--output", "json"], env=cluster.aws_env(),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if r.stdout.strip() else {}

    v = aws("create-volume", "--availability-zone", AZ_B, "--size", "1", "--volume-type", "gp3")
    aws("wait", "volume-available", "--volume-ids", v["VolumeId"])
    s = aws("create-snapshot", "--volume-id", v["VolumeId"], "--description", "from the cli")
    aws("wait", "snapshot-completed", "--snapshot-ids", s["SnapshotId"])
    d = aws("describe-snapshots", "--snapshot-ids", s["SnapshotId"])
    assert d["Snapshots"][0]["State"] == "completed"
    aws("create-tags", "--resources", s["SnapshotId"], "--tags", "Key=k,Value=v")
    t = aws("describe-tags", "--filters", f"Name=resource-id,Values={s['SnapshotId']}")
    assert t["Tags"] == [{"Key": "k", "ResourceId": s["SnapshotId"], "ResourceType": "snapshot", "Value": "v"}]
    aws("delete-snapshot", "--snapshot-id", s["SnapshotId"])
    aws("delete-volume", "--volume-id", v["VolumeId"])
    aws("wait", "volume-deleted", "--volume-ids", v["VolumeId"])


def scrape(cluster):
    """The gateway's /metrics as {(name, frozenset(labels)): value}."""
    import re
    import urllib.request
    with urllib.request.urlopen(cluster.endpoint + "/metrics", timeout=30) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$', line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    assert text.rstrip().endswith("# EOF"), text[-200:]
    return out


def test_metrics_count_requests_by_action_and_error_code(ec2, cluster):
    import urllib.request
    for path in ["/healthz", "/readyz"]:
        with urllib.request.urlopen(cluster.endpoint + path, timeout=30) as r:
            assert r.status == 200, path

    def count(action, status, error=""):
        key = ("cairn_gateway_requests_total",
               frozenset({("api", "ec2"), ("action", action), ("status", str(status)), ("error", error)}))
        return scrape(cluster).get(key, 0)

    ok_before = count("DescribeVolumes", 200)
    bad_before = count("DescribeVolumes", 400, "InvalidVolume.NotFound")
    ec2.describe_volumes()
    with pytest.raises(ClientError):
        ec2.describe_volumes(VolumeIds=["vol-0123456789abcdef0"])
    assert count("DescribeVolumes", 200) == ok_before + 1
    assert count("DescribeVolumes", 400, "InvalidVolume.NotFound") == bad_before + 1
    m = scrape(cluster)
    hist = [v for (n, l), v in m.items()
            if n == "cairn_gateway_request_duration_seconds_count" and ("action", "DescribeVolumes") in l]
    assert hist and hist[0] >= 2, m
    assert any(n == "cairn_gateway_worker_state" and ("worker", "garbage collector") in l for (n, l) in m), sorted({n for n, _ in m})
    # The region's records by state, and the copies this gateway finished
    # (earlier tests in this module took and completed snapshots).
    vol = new_volume(ec2)
    s = snapshot(ec2, vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s], WaiterConfig=FAST)
    m = scrape(cluster)
    completed = ("cairn_gateway_cluster_snapshots", frozenset({("state", "completed")}))
    assert m.get(completed, 0) >= 1, sorted(k for k in m if "cluster" in k[0])
    assert m.get(("cairn_gateway_cluster_volumes", frozenset({("state", "available")})), 0) >= 1
    assert m.get(("cairn_gateway_copies_completed_total", frozenset()), 0) >= 1
    # No ids among the labels.
    assert not any("vol-" in v or "snap-" in v for (_, l) in m for (_, v) in l)


def nbd_size(uri):
    r = subprocess.run(["qemu-img", "info", "--output=json", "-f", "raw", uri],
                       capture_output=True, text=True, timeout=60, check=True)
    return json.loads(r.stdout)["virtual-size"]


def test_modify_volume_grows_it_and_its_next_snapshot_covers_the_new_size(ec2, cluster, tmp_path):
    from cluster import wait_for
    vol = new_volume(ec2, size=1)
    img = make_image(tmp_path / "one.img", GIB, [0, 3, 2047])
    nbd_write(cluster.nbd_uri(vol), img)
    before = snapshot(ec2, vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[before], WaiterConfig=FAST)

    m = ec2.modify_volume(VolumeId=vol, Size=2, Throughput=250)["VolumeModification"]
    assert m["VolumeId"] == vol and m["ModificationState"] == "modifying", m
    assert (m["OriginalSize"], m["TargetSize"]) == (1, 2), m
    assert (m["OriginalIops"], m["TargetIops"]) == (3000, 3000), m
    assert m["OriginalVolumeType"] == m["TargetVolumeType"] == "gp3"
    assert (m["OriginalThroughput"], m["TargetThroughput"]) == (125, 250)

    def state():
        got = ec2.describe_volumes_modifications(VolumeIds=[vol])["VolumesModifications"]
        return got[0]["ModificationState"] == "completed" and got[0]
    done = wait_for(state, timeout=60, what="the modification to complete")
    assert done["Progress"] == 100 and done["EndTime"] >= done["StartTime"]
    v = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]
    assert (v["Size"], v["Throughput"], v["VolumeType"]) == (2, 250, "gp3")
    filtered = ec2.describe_volumes_modifications(Filters=[
        {"Name": "modification-state", "Values": ["completed"]},
        {"Name": "target-size", "Values": ["2"]},
        {"Name": "volume-id", "Values": [vol]}])["VolumesModifications"]
    assert [f["VolumeId"] for f in filtered] == [vol]

    # Over NBD: 2 GiB now, the old data as it was and the new space zeros.
    assert nbd_size(cluster.nbd_uri(vol)) == 2 * GIB
    grown = tmp_path / "grown.img"
    with open(img, "rb") as src, open(grown, "wb") as dst:
        dst.write(src.read())
        dst.truncate(2 * GIB)
    code, out = nbd_compare(grown, cluster.nbd_uri(vol))
    assert code == 0, out

    # The next snapshot covers the new size, the one before keeps the old.
    two = make_image(tmp_path / "two.img", 2 * GIB, [0, 3, 2047, 3000, 4095])
    nbd_write(cluster.nbd_uri(vol), two)
    after = snapshot(ec2, vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[after], WaiterConfig=FAST)
    assert ec2.describe_snapshots(SnapshotIds=[after])["Snapshots"][0]["VolumeSize"] == 2
    for snap, image, size in [(after, two, 2), (before, img, 1)]:
        r = ec2.create_volume(SnapshotId=snap, AvailabilityZone=AZ_B)
        assert r["Size"] == size
        ec2.get_waiter("volume_available").wait(VolumeIds=[r["VolumeId"]], WaiterConfig=FAST)
        assert nbd_size(cluster.nbd_uri(r["VolumeId"])) == size * GIB
        code, out = nbd_compare(image, cluster.nbd_uri(r["VolumeId"]))
        assert code == 0, out


@pytest.mark.parametrize("change,code", [
    (dict(Size=1), "InvalidParameterValue"),  # shrinking
    (dict(VolumeType="gp2", Iops=500), "InvalidParameterCombination"),
    (dict(VolumeType="io1", Size=4), "MissingParameter"),
    (dict(VolumeType="gp9"), "InvalidParameterValue"),
    (dict(Size=70000), "InvalidParameterValue"),
    (dict(Size=3, VolumeType="gp3", Iops=3000, Throughput=125), "InvalidParameterValue"),  # nothing changes
])
def test_modify_volume_refusals_change_nothing(ec2, change, code):
    vol = new_volume(ec2, size=3)
    before = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]
    with pytest.raises(ClientError) as e:
        ec2.modify_volume(VolumeId=vol, **change)
    assert code_of(e) == code, e.value.response
    assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0] == before
    assert ec2.describe_volumes_modifications(VolumeIds=[vol])["VolumesModifications"] == []


def test_modifications_of_unknown_volumes(ec2):
    for call in [lambda: ec2.modify_volume(VolumeId="vol-0123456789abcdef0", Size=2),
                 lambda: ec2.describe_volumes_modifications(VolumeIds=["vol-0123abcd"])]:
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == "InvalidVolume.NotFound"
