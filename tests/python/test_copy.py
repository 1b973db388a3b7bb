"""CopySnapshot with boto3 as it is (it adds a presigned URL to every
CopySnapshot): within the region the copy is a new snapshot with its own id,
description and tags, completed without moving data; it restores the same
bytes after its source is deleted and garbage collected; to an Outpost and
back the copy is pending at once, completes, names its Outpost and restores
there (the source deleted and collected mid-way changes nothing); a grantee copies a
snapshot shared with it into one of its own; a bad presigned URL fails the
copy as EC2 does (status error with a message); bad input gets EC2's codes
and creates nothing."""
import subprocess
import uuid

from accounts import admin, client, code_of, new_key
from cluster import BIN
from util import AZ_A, AZ_B, E2E_ACCOUNT, GIB, make_image, nbd_compare, nbd_write

FAST = {"Delay": 1, "MaxAttempts": 120}


def snapshot_ids(ec2):
    return {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def test_copy_within_the_region(cluster, ec2, tmp_path):
    region = cluster.env["AWS_REGION"]
    vol = ec2.create_volume(AvailabilityZone=AZ_A, Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    img = make_image(tmp_path / "disk.img", GIB, [0, 9, 500, 2047])
    nbd_write(cluster.nbd_uri(vol), img)
    src = ec2.create_snapshot(VolumeId=vol, Description="source")["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[src], WaiterConfig=FAST)

    r = ec2.copy_snapshot(SourceSnapshotId=src, SourceRegion=region, Description="the copy",
                          TagSpecifications=[{"ResourceType": "snapshot",
                                              "Tags": [{"Key": "kind", "Value": "copy"}]}])
    copy = r["SnapshotId"]
    assert copy != src and r["Tags"] == [{"Key": "kind", "Value": "copy"}]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[copy], WaiterConfig=FAST)
    d = ec2.describe_snapshots(SnapshotIds=[copy])["Snapshots"][0]
    s = ec2.describe_snapshots(SnapshotIds=[src])["Snapshots"][0]
    assert (d["Description"], d["OwnerId"], d["Progress"]) == ("the copy", E2E_ACCOUNT, "100%")
    assert d["VolumeSize"] == s["VolumeSize"] and d["Encrypted"] == s["Encrypted"]
    assert d.get("FullSnapshotSizeInBytes") == s.get("FullSnapshotSizeInBytes")

    # The source goes, and garbage collection runs: the copy still restores.
    ec2.delete_snapshot(SnapshotId=src)
    gc = subprocess.run([BIN, "admin", "gc", "--wait", "--data-dir", str(cluster.data_dir)],
                        capture_output=True, text=True, timeout=300)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    new = ec2.create_volume(SnapshotId=copy, AvailabilityZone=AZ_B)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[new], WaiterConfig=FAST)
    code, out = nbd_compare(img, cluster.nbd_uri(new))
    assert code == 0, out

    # Bad input: EC2's codes, and no snapshot appears.
    before = snapshot_ids(ec2)
    missing = "snap-0" + uuid.uuid4().hex[:16]
    bad = [
        (dict(SourceSnapshotId=missing, SourceRegion=region), "InvalidSnapshot.NotFound"),
        (dict(SourceSnapshotId=copy, SourceRegion="us-west-2"), "InvalidParameterValue"),
        (dict(SourceSnapshotId="snap-nope", SourceRegion=region), "InvalidSnapshotID.Malformed"),
        (dict(SourceSnapshotId=copy, SourceRegion=region,
              DestinationOutpostArn="arn:aws:outposts:%s:%s:outpost/op-0123456789abcdef0"
              % (region, E2E_ACCOUNT)), "InvalidParameterValue"),
        (dict(SourceSnapshotId=copy, SourceRegion=region,
              DestinationOutpostArn="arn:aws:outposts:nowhere"), "InvalidParameterValue"),
    ]
    for kw, want in bad:
        got = code_of(lambda: ec2.copy_snapshot(**kw))
        assert got and got[0] == want, (kw, got)
    assert snapshot_ids(ec2) == before


def test_copy_to_the_outpost_and_back(cluster, ec2, tmp_path):
    region, arn = cluster.env["AWS_REGION"], cluster.env["CAIRN_OUTPOST_ARN"]
    vol = ec2.create_volume(AvailabilityZone=AZ_A, Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    img = make_image(tmp_path / "disk.img", GIB, list(range(0, 2048, 16)))
    nbd_write(cluster.nbd_uri(vol), img)
    src = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[src], WaiterConfig=FAST)

    r = ec2.copy_snapshot(SourceSnapshotId=src, SourceRegion=region, DestinationOutpostArn=arn,
                          Description="to the edge")
    there = r["SnapshotId"]
    d = ec2.describe_snapshots(SnapshotIds=[there])["Snapshots"][0]
    assert d["State"] in ("pending", "completed") and d["OutpostArn"] == arn, d
    # The source may go while the copy runs: the copy holds what it reads.
    ec2.delete_snapshot(SnapshotId=src)
    gc = subprocess.run([BIN, "admin", "gc", "--wait", "--data-dir", str(cluster.data_dir)],
                        capture_output=True, text=True, timeout=300)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[there], WaiterConfig=FAST)
    d = ec2.describe_snapshots(SnapshotIds=[there])["Snapshots"][0]
    assert (d["Progress"], d["Description"], d["OutpostArn"]) == ("100%", "to the edge", arn)
    edge = ec2.create_volume(SnapshotId=there, AvailabilityZone=AZ_A, OutpostArn=arn)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[edge], WaiterConfig=FAST)
    code, out = nbd_compare(img, cluster.nbd_uri(edge))
    assert code == 0, out

    # Back to the region: a copy without DestinationOutpostArn.
    back = ec2.copy_snapshot(SourceSnapshotId=there, SourceRegion=region)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[back], WaiterConfig=FAST)
    assert "OutpostArn" not in ec2.describe_snapshots(SnapshotIds=[back])["Snapshots"][0]
    home = ec2.create_volume(SnapshotId=back, AvailabilityZone=AZ_B)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[home], WaiterConfig=FAST)
    code, out = nbd_compare(img, cluster.nbd_uri(home))
    assert code == 0, out


def test_a_grantee_copies_and_a_bad_presigned_url_fails_the_copy(cluster, ec2):
    region = cluster.env["AWS_REGION"]
    name = "copier-" + uuid.uuid4().hex[:6]
    grantee_id = admin(cluster, "account", "create", name).stdout.strip()
    grantee = client(cluster, *new_key(cluster, name))
    vol = ec2.create_volume(AvailabilityZone=AZ_A, Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    src = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[src], WaiterConfig=FAST)

    assert code_of(lambda: grantee.copy_snapshot(SourceSnapshotId=src, SourceRegion=region))[0] \
        == "InvalidSnapshot.NotFound"
    ec2.modify_snapshot_attribute(SnapshotId=src, Attribute="createVolumePermission",
                                  OperationType="add", UserIds=[grantee_id])
    theirs = grantee.copy_snapshot(SourceSnapshotId=src, SourceRegion=region)["SnapshotId"]
    d = grantee.describe_snapshots(SnapshotIds=[theirs])["Snapshots"][0]
    assert d["OwnerId"] == grantee_id and d["State"] == "completed"
    # The owner does not see the grantee's copy.
    assert code_of(lambda: ec2.describe_snapshots(SnapshotIds=[theirs]))[0] == \
        "InvalidSnapshot.NotFound"

    # A presigned URL that does not verify: the copy exists, in error, saying why.
    bad_url = cluster.endpoint + "/?Action=CopySnapshot&SourceSnapshotId=" + src + \
        "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAAAAAAAAAAAAAAAAA%2F20260101%2F" + \
        region + "%2Fec2%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60" + \
        "&X-Amz-SignedHeaders=host&X-Amz-Signature=" + "0" * 64
    failed = ec2.copy_snapshot(SourceSnapshotId=src, SourceRegion=region,
                               PresignedUrl=bad_url)["SnapshotId"]
    d = ec2.describe_snapshots(SnapshotIds=[failed])["Snapshots"][0]
    assert d["State"] == "error" and "presigned" in d["StateMessage"].lower(), d
    ec2.delete_snapshot(SnapshotId=failed)
