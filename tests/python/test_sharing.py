"""Ownership and sharing across accounts, with boto3 signed by each
account's own key: a tenant matrix runs every supported action on one
account's volume and snapshot as its owner, as an account it shared the
snapshot with (the grantee) and as a stranger, and checks each outcome;
then the grantee restores the shared snapshot and reads it back byte for
byte, public sharing opens it to the stranger, and taking the share back
or deleting the snapshot closes it again."""
import base64
import hashlib
import uuid

import pytest

from accounts import admin, client, code_of, new_key
from util import AZ_A, BLOCK, E2E_ACCOUNT, make_image, nbd_compare, nbd_write

FAST = {"Delay": 1, "MaxAttempts": 120}
NOT_FOUND = ("InvalidSnapshot.NotFound", 400)
UNAUTHORIZED = ("UnauthorizedOperation", 403)


class Tenant:
    def __init__(self, cluster, name):
        if name is None:  # the cluster's first account, from its env file
            self.id = E2E_ACCOUNT
            key, secret = cluster.env["AWS_ACCESS_KEY_ID"], cluster.env["AWS_SECRET_ACCESS_KEY"]
        else:
            self.id = admin(cluster, "account", "create", name).stdout.strip()
            key, secret = new_key(cluster, name)
        self.ec2 = client(cluster, key, secret)
        self.ebs = client(cluster, key, secret, "ebs")


@pytest.fixture(scope="module")
def tenants(cluster):
    tag = uuid.uuid4().hex[:6]
    return (Tenant(cluster, None), Tenant(cluster, f"grantee-{tag}"),
            Tenant(cluster, f"stranger-{tag}"))


def ebs_code(call):
    code = code_of(call)
    return code and code[0]


def described(ec2, snap, **kw):
    """The ids DescribeSnapshots answers, restricted to `snap`'s presence."""
    ids = [s["SnapshotId"] for s in ec2.describe_snapshots(**kw)["Snapshots"]]
    return snap in ids


def test_tenant_matrix(cluster, tenants, tmp_path):
    owner, grantee, stranger = tenants
    region = cluster.env["AWS_REGION"]
    img = make_image(tmp_path / "disk.img", 1 << 30, [0, 1, 7, 300])
    vol = owner.ec2.create_volume(AvailabilityZone=AZ_A, Size=1)["VolumeId"]
    owner.ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    nbd_write(cluster.nbd_uri(vol), img)
    snap = owner.ec2.create_snapshot(
        VolumeId=vol, TagSpecifications=[{"ResourceType": "snapshot",
                                          "Tags": [{"Key": "team", "Value": "a"}]}])["SnapshotId"]
    owner.ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)

    # DryRun changes nothing and says it would have worked.
    assert code_of(lambda: owner.ec2.modify_snapshot_attribute(
        SnapshotId=snap, Attribute="createVolumePermission", OperationType="add",
        UserIds=[grantee.id], DryRun=True)) == ("DryRunOperation", 412)
    assert owner.ec2.describe_snapshot_attribute(
        SnapshotId=snap, Attribute="createVolumePermission")["CreateVolumePermissions"] == []
    owner.ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                        OperationType="add", UserIds=[grantee.id])

    restored = []

    def create_volume(t):
        v = t.ec2.create_volume(AvailabilityZone=AZ_A, SnapshotId=snap)["VolumeId"]
        restored.append((t, v))

    def list_blocks(t):
        assert len(t.ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]) == 4

    def changed_blocks(t):
        assert len(t.ebs.list_changed_blocks(SecondSnapshotId=snap)["ChangedBlocks"]) == 4

    def get_block(t):
        b = t.ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"][1]
        r = t.ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=b["BlockIndex"],
                                     BlockToken=b["BlockToken"])
        data = r["BlockData"].read()
        with open(img, "rb") as f:
            f.seek(b["BlockIndex"] * BLOCK)
            assert data == f.read(BLOCK)
        assert base64.b64decode(r["Checksum"]) == hashlib.sha256(data).digest()

    def start_child(t):
        t.ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=snap, Timeout=60)

    def sees_it(t):
        assert t.ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["OwnerId"] == owner.id
        assert described(t.ec2, snap)

    attr = dict(SnapshotId=snap, Attribute="createVolumePermission")
    ok, skip = None, "not run"
    # action: (as owner, as grantee, as stranger); `ok` means it succeeds. The
    # changing actions run as the grantee and the stranger only (each is
    # refused there); the owner's own changes are checked further down.
    matrix = {
        "DescribeSnapshots": (sees_it, ok, ok, NOT_FOUND),
        "DescribeSnapshotAttribute": (
            lambda t: t.ec2.describe_snapshot_attribute(**attr), ok, UNAUTHORIZED, NOT_FOUND),
        "ModifySnapshotAttribute": (
            lambda t: t.ec2.modify_snapshot_attribute(
                **attr, OperationType="add", UserIds=[stranger.id]), skip, UNAUTHORIZED, NOT_FOUND),
        "ResetSnapshotAttribute": (
            lambda t: t.ec2.reset_snapshot_attribute(**attr), skip, UNAUTHORIZED, NOT_FOUND),
        "CreateTags": (
            lambda t: t.ec2.create_tags(Resources=[snap], Tags=[{"Key": "x", "Value": "y"}]),
            ok, UNAUTHORIZED, NOT_FOUND),
        "DeleteTags": (
            lambda t: t.ec2.delete_tags(Resources=[snap], Tags=[{"Key": "x"}]),
            ok, UNAUTHORIZED, NOT_FOUND),
        "DeleteSnapshot": (lambda t: t.ec2.delete_snapshot(SnapshotId=snap),
                           skip, UNAUTHORIZED, NOT_FOUND),
        "CreateVolume": (create_volume, ok, ok, NOT_FOUND),
        "CopySnapshot": (lambda t: t.ec2.copy_snapshot(SourceSnapshotId=snap, SourceRegion=region),
                         ok, ok, NOT_FOUND),
        "ListSnapshotBlocks": (list_blocks, ok, ok, "AccessDeniedException"),
        "ListChangedBlocks": (changed_blocks, ok, ok, "AccessDeniedException"),
        "GetSnapshotBlock": (get_block, ok, ok, "AccessDeniedException"),
        "StartSnapshot (child)": (start_child, skip, "AccessDeniedException",
                                  "AccessDeniedException"),
        "DescribeVolumes": (lambda t: t.ec2.describe_volumes(VolumeIds=[vol]),
                            ok, ("InvalidVolume.NotFound", 400), ("InvalidVolume.NotFound", 400)),
        "CreateSnapshot": (lambda t: t.ec2.create_snapshot(VolumeId=vol),
                           skip, ("InvalidVolume.NotFound", 400), ("InvalidVolume.NotFound", 400)),
        "ModifyVolume": (lambda t: t.ec2.modify_volume(VolumeId=vol, Size=2),
                         skip, ("InvalidVolume.NotFound", 400), ("InvalidVolume.NotFound", 400)),
        "DeleteVolume": (lambda t: t.ec2.delete_volume(VolumeId=vol),
                         skip, ("InvalidVolume.NotFound", 400), ("InvalidVolume.NotFound", 400)),
    }
    failures = []
    for action, (call, *wants) in matrix.items():
        for who, t, want in zip(("owner", "grantee", "stranger"), tenants, wants):
            if want == skip:
                continue
            is_ebs = isinstance(want, str) or action in ("ListSnapshotBlocks", "ListChangedBlocks",
                                                         "GetSnapshotBlock", "StartSnapshot (child)")
            got = ebs_code(lambda: call(t)) if is_ebs else code_of(lambda: call(t))
            if got != want:
                failures.append(f"{action} as {who}: got {got}, want {want}")
    assert not failures, "\n".join(failures)

    # Nothing the refused calls tried happened.
    d = owner.ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert {t["Key"]: t["Value"] for t in d["Tags"]} == {"team": "a"}
    perms = owner.ec2.describe_snapshot_attribute(**attr)["CreateVolumePermissions"]
    assert perms == [{"UserId": grantee.id}]
    assert owner.ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Size"] == 1
    # The grantee sees the owner's snapshot without the owner's tags.
    g = grantee.ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert g["OwnerId"] == owner.id and not g.get("Tags")

    # Each restored volume belongs to whoever created it and holds the owner's bytes.
    assert [t for t, _ in restored] == [owner, grantee]
    for t, v in restored:
        t.ec2.get_waiter("volume_available").wait(VolumeIds=[v], WaiterConfig=FAST)
        assert t.ec2.describe_volumes(VolumeIds=[v])["Volumes"][0]["SnapshotId"] == snap
        code, out = nbd_compare(img, cluster.nbd_uri(v))
        assert code == 0, out
    gvol = restored[1][1]
    assert code_of(lambda: owner.ec2.describe_volumes(VolumeIds=[gvol]))[0] == \
        "InvalidVolume.NotFound"


def test_owner_ids_restorable_by_and_public(cluster, tenants):
    owner, grantee, stranger = tenants
    vol = owner.ec2.create_volume(AvailabilityZone=AZ_A, Size=1)["VolumeId"]
    owner.ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    snap = owner.ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    owner.ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)
    attr = dict(SnapshotId=snap, Attribute="createVolumePermission")

    # The structured form, as the AWS CLI's --create-volume-permission sends it.
    owner.ec2.modify_snapshot_attribute(
        **attr, CreateVolumePermission={"Add": [{"UserId": grantee.id}]})
    assert described(owner.ec2, snap, OwnerIds=["self"])
    assert described(owner.ec2, snap, RestorableByUserIds=[grantee.id])
    assert not described(owner.ec2, snap, RestorableByUserIds=[stranger.id])
    assert not described(owner.ec2, snap, RestorableByUserIds=["all"])
    assert described(grantee.ec2, snap)
    assert described(grantee.ec2, snap, OwnerIds=[owner.id], RestorableByUserIds=["self"])
    assert not described(grantee.ec2, snap, OwnerIds=["self"])
    assert described(grantee.ec2, snap, Filters=[{"Name": "owner-id", "Values": [owner.id]}])
    assert not described(grantee.ec2, snap, Filters=[{"Name": "owner-id", "Values": [grantee.id]}])
    assert not described(stranger.ec2, snap)

    # Public: everyone sees it and may restore it; `all` is not "shared with me".
    owner.ec2.modify_snapshot_attribute(**attr, OperationType="add", GroupNames=["all"])
    assert owner.ec2.describe_snapshot_attribute(**attr)["CreateVolumePermissions"] == \
        [{"UserId": grantee.id}, {"Group": "all"}]
    assert described(stranger.ec2, snap)
    assert described(stranger.ec2, snap, RestorableByUserIds=["all"])
    assert not described(stranger.ec2, snap, RestorableByUserIds=["self"])
    assert described(owner.ec2, snap, RestorableByUserIds=[stranger.id])
    assert len(stranger.ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]) == 0
    v = stranger.ec2.create_volume(AvailabilityZone=AZ_A, SnapshotId=snap)["VolumeId"]
    assert code_of(lambda: stranger.ec2.delete_snapshot(SnapshotId=snap)) == UNAUTHORIZED

    # Taken back: the stranger loses it, the grantee keeps its own grant.
    owner.ec2.modify_snapshot_attribute(
        **attr, CreateVolumePermission={"Remove": [{"Group": "all"}]})
    assert not described(stranger.ec2, snap)
    assert code_of(lambda: stranger.ec2.create_volume(AvailabilityZone=AZ_A, SnapshotId=snap)) == \
        NOT_FOUND
    assert described(grantee.ec2, snap)

    # Bad changes get EC2's codes and change nothing.
    bad = [
        (dict(OperationType="add", UserIds=["12345"]), "InvalidUserID.Malformed"),
        (dict(OperationType="add", GroupNames=["admins"]), "InvalidAMIAttributeItemValue"),
        (dict(CreateVolumePermission={"Add": [{"UserId": stranger.id}],
                                      "Remove": [{"UserId": grantee.id}]}),
         "InvalidParameterCombination"),
        (dict(OperationType="grant", UserIds=[stranger.id]), "InvalidParameterValue"),
    ]
    for kw, code in bad:
        assert code_of(lambda: owner.ec2.modify_snapshot_attribute(**attr, **kw))[0] == code, kw
    assert owner.ec2.describe_snapshot_attribute(**attr)["CreateVolumePermissions"] == \
        [{"UserId": grantee.id}]

    # Reset: the owner alone again.
    owner.ec2.reset_snapshot_attribute(**attr)
    assert owner.ec2.describe_snapshot_attribute(**attr)["CreateVolumePermissions"] == []
    assert code_of(lambda: grantee.ec2.describe_snapshots(SnapshotIds=[snap])) == NOT_FOUND
    assert ebs_code(lambda: grantee.ebs.list_snapshot_blocks(SnapshotId=snap)) == \
        "AccessDeniedException"

    # Deleting the snapshot revokes every share with it.
    owner.ec2.modify_snapshot_attribute(**attr, OperationType="add", UserIds=[grantee.id])
    stranger.ec2.get_waiter("volume_available").wait(VolumeIds=[v], WaiterConfig=FAST)
    owner.ec2.delete_snapshot(SnapshotId=snap)
    assert not described(grantee.ec2, snap)
    # The stranger's volume made while it was public stays the stranger's.
    assert stranger.ec2.describe_volumes(VolumeIds=[v])["Volumes"][0]["State"] == "available"
