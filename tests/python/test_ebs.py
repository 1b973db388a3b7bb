"""The EBS direct APIs end to end, with boto3's unmodified `ebs` client
against a `cairn up` cluster: StartSnapshot / PutSnapshotBlock /
CompleteSnapshot, the three reads, every error case of issue 6, and the one
store shared with EC2 (CreateVolume restores, CreateSnapshot snapshots are
readable block by block).

The module runs its own cluster with `CAIRN_EBS_TIMEOUT_MINUTE_MS=1000`, so
a `Timeout` minute lasts one second and the inactivity timeout (10 minutes at
least) can be watched in 10 seconds."""
import base64
import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from cluster import Cluster, wait_for
from util import AZ_A, AZ_B, BLOCK, E2E_ACCOUNT, E2E_ARGS, GIB, http_json, make_image, nbd_compare, nbd_write, sign

FAST = {"Delay": 1, "MaxAttempts": 300}
ZERO = bytes(BLOCK)


@pytest.fixture(scope="module")
def ebs_cluster(tmp_path_factory):
    old = os.environ.get("CAIRN_EBS_TIMEOUT_MINUTE_MS")
    os.environ["CAIRN_EBS_TIMEOUT_MINUTE_MS"] = "1000"
    try:
        c = Cluster(tmp_path_factory.mktemp("cairn-ebs") / "data", E2E_ARGS).start()
    finally:
        if old is None:
            del os.environ["CAIRN_EBS_TIMEOUT_MINUTE_MS"]
        else:
            os.environ["CAIRN_EBS_TIMEOUT_MINUTE_MS"] = old
    yield c
    c.stop()


@pytest.fixture(scope="module")
def ebs(ebs_cluster):
    return ebs_cluster.client("ebs")


@pytest.fixture(scope="module")
def raw_ebs(ebs_cluster):
    """An `ebs` client without botocore's client-side checks, so out-of-range
    values reach the gateway."""
    import boto3
    return boto3.client(
        "ebs",
        endpoint_url=ebs_cluster.endpoint,
        region_name=ebs_cluster.env["AWS_REGION"],
        aws_access_key_id=ebs_cluster.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=ebs_cluster.env["AWS_SECRET_ACCESS_KEY"],
        config=Config(parameter_validation=False, retries={"max_attempts": 2}),
    )


@pytest.fixture(scope="module")
def ec2(ebs_cluster):
    return ebs_cluster.client("ec2")


def b64sha(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def linear(blocks):
    """The LINEAR aggregate: SHA-256 of the Base64 checksums concatenated in
    ascending block order."""
    text = "".join(b64sha(blocks[i]) for i in sorted(blocks))
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def put(ebs, snap, index, data, checksum=None):
    return ebs.put_snapshot_block(
        SnapshotId=snap, BlockIndex=index, BlockData=data, DataLength=len(data),
        Checksum=checksum or b64sha(data), ChecksumAlgorithm="SHA256",
    )


def err(excinfo):
    r = excinfo.value.response
    return r["Error"]["Code"], r.get("Reason"), r["ResponseMetadata"]["HTTPStatusCode"]


def chunk_totals(cluster):
    nodes = http_json(cluster.endpoint + "/_cairn/chunks")["nodes"]
    return sum(n["chunks"] for n in nodes), sum(n["bytes"] for n in nodes)


def state_of(ec2, snap):
    return ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]


def complete_and_wait(ebs, ec2, snap, blocks):
    r = ebs.complete_snapshot(
        SnapshotId=snap, ChangedBlocksCount=len(blocks), Checksum=linear(blocks),
        ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR",
    )
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert r["Status"] in ("pending", "completed")
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)


def write_snapshot(ebs, ec2, blocks, size=1, parent=None):
    kw = {"ParentSnapshotId": parent} if parent else {}
    snap = ebs.start_snapshot(VolumeSize=size, **kw)["SnapshotId"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: put(ebs, snap, kv[0], kv[1]), blocks.items()))
    complete_and_wait(ebs, ec2, snap, blocks)
    return snap


def list_all(ebs, snap, **kw):
    out, token = [], None
    while True:
        args = dict(SnapshotId=snap, **kw)
        if token:
            args["NextToken"] = token
        r = ebs.list_snapshot_blocks(**args)
        out.extend(r["Blocks"])
        token = r.get("NextToken")
        if not token:
            return out, r


def read_block(ebs, snap, index, token):
    r = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=index, BlockToken=token)
    data = r["BlockData"].read()
    assert r["DataLength"] == BLOCK == len(data)
    assert r["Checksum"] == b64sha(data) and r["ChecksumAlgorithm"] == "SHA256"
    return data


# 1. StartSnapshot -----------------------------------------------------------

def test_start_snapshot_visible_and_idempotent(ebs, ec2):
    token = str(uuid.uuid4())
    args = dict(VolumeSize=2, Description="agent backup", Timeout=120, ClientToken=token,
                Tags=[{"Key": "Name", "Value": "ebs-direct"}])
    r = ebs.start_snapshot(**args)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 201
    snap = r["SnapshotId"]
    assert snap.startswith("snap-") and r["Status"] == "pending"
    assert r["VolumeSize"] == 2 and r["BlockSize"] == BLOCK
    assert r["OwnerId"] and r["Description"] == "agent backup" and r["StartTime"].year >= 2026
    assert r["Tags"] == [{"Key": "Name", "Value": "ebs-direct"}]
    d = state_of(ec2, snap)
    assert d["State"] == "pending" and d["VolumeId"] == "vol-ffffffff" and d["VolumeSize"] == 2
    assert {t["Key"]: t["Value"] for t in d["Tags"]} == {"Name": "ebs-direct"}

    assert ebs.start_snapshot(**args)["SnapshotId"] == snap, "same token, same snapshot"
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(**{**args, "VolumeSize": 3})
    assert err(e)[0] == "ConflictException" and err(e)[2] == 409


def test_start_snapshot_refusals(ebs, raw_ebs, ec2):
    cases = [
        (dict(VolumeSize=0), "INVALID_VOLUME_SIZE"),
        (dict(VolumeSize=65537), "INVALID_VOLUME_SIZE"),
        (dict(VolumeSize=1, Timeout=5), "INVALID_PARAMETER_VALUE"),
        (dict(VolumeSize=1, Timeout=4321), "INVALID_PARAMETER_VALUE"),
        (dict(VolumeSize=1, Encrypted=True), "INVALID_PARAMETER_VALUE"),
        (dict(VolumeSize=1, Encrypted=True,
              KmsKeyArn=f"arn:aws:kms:us-east-1:{E2E_ACCOUNT}:key/abc"), "INVALID_PARAMETER_VALUE"),
        (dict(VolumeSize=1, Tags=[{"Key": "aws:x", "Value": "1"}]), "INVALID_TAG"),
    ]
    before = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    for args, reason in cases:
        with pytest.raises(ClientError) as e:
            raw_ebs.start_snapshot(**args)
        assert err(e) == ("ValidationException", reason, 400), args
    for unknown in ["snap-0123456789abcdef0", "snap-0123abcd"]:  # also the short legacy form
        with pytest.raises(ClientError) as e:
            ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=unknown)
        assert err(e) == ("ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", 404), unknown
        with pytest.raises(ClientError) as e:
            ebs.list_snapshot_blocks(SnapshotId=unknown)
        assert err(e) == ("ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", 404), unknown
    pending = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=pending)
    assert err(e)[0] == "ValidationException", "a pending parent is refused"
    after = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert after - before == {pending}, "refused calls create nothing"


# 2 and 3. PutSnapshotBlock, CompleteSnapshot, and reading it back ------------

def test_write_complete_read_back(ebs, ec2, ebs_cluster):
    data = {i: os.urandom(BLOCK) for i in (0, 1, 5, 2047)}
    snap = ebs.start_snapshot(VolumeSize=1, Description="roundtrip")["SnapshotId"]
    chunks0 = chunk_totals(ebs_cluster)
    for i, d in data.items():
        r = put(ebs, snap, i, d)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 201
        assert r["Checksum"] == b64sha(d) and r["ChecksumAlgorithm"] == "SHA256"
    chunks1 = chunk_totals(ebs_cluster)
    assert chunks1[0] > chunks0[0]

    # An all-zero block costs nothing; a block equal to one stored is deduplicated.
    put(ebs, snap, 9, ZERO)
    put(ebs, snap, 10, data[0])
    assert chunk_totals(ebs_cluster) == chunks1
    # Overwrite before completion.
    data[1] = os.urandom(BLOCK)
    put(ebs, snap, 1, data[1])

    # A bad checksum is refused and stores nothing.
    before = chunk_totals(ebs_cluster)
    with pytest.raises(ClientError) as e:
        put(ebs, snap, 20, os.urandom(BLOCK), checksum=b64sha(b"something else"))
    assert err(e)[0] == "ValidationException" and err(e)[2] == 400
    assert chunk_totals(ebs_cluster) == before

    written = {**data, 9: ZERO, 10: data[0]}
    complete_and_wait(ebs, ec2, snap, written)
    d = state_of(ec2, snap)
    assert d["State"] == "completed" and d["Progress"] == "100%"

    blocks, page = list_all(ebs, snap)
    assert page["VolumeSize"] == 1 and page["BlockSize"] == BLOCK
    assert page["ExpiryTime"].year >= 2026
    idx = [b["BlockIndex"] for b in blocks]
    assert idx == [0, 1, 5, 10, 2047], "ascending, zero blocks absent, refused block absent"
    for b in blocks:
        assert read_block(ebs, snap, b["BlockIndex"], b["BlockToken"]) == written[b["BlockIndex"]]

    # No more writes once completed, and completing again answers its state.
    with pytest.raises(ClientError) as e:
        put(ebs, snap, 3, os.urandom(BLOCK))
    assert err(e)[0] == "ValidationException"
    assert ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=6)["Status"] == "completed"


def test_put_refusals(ebs, raw_ebs):
    snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    small = os.urandom(1000)
    with pytest.raises(ClientError) as e:
        put(ebs, snap, 0, small)
    assert err(e)[0] == "ValidationException", "only 524288-byte blocks"
    with pytest.raises(ClientError) as e:
        put(ebs, snap, 2048, os.urandom(BLOCK))
    assert err(e) == ("ValidationException", "INVALID_BLOCK", 400), "past the end of 1 GiB"
    with pytest.raises(ClientError) as e:
        raw_ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockData=ZERO, DataLength=BLOCK,
                                   Checksum=b64sha(ZERO), ChecksumAlgorithm="MD5")
    assert err(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        put(ebs, "snap-0123456789abcdef0", 0, ZERO)
    assert err(e) == ("ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", 404)
    with pytest.raises(ClientError) as e:
        put(ebs, "vol-0123456789abcdef0", 0, ZERO)
    assert err(e) == ("ValidationException", "INVALID_SNAPSHOT_ID", 400)


def test_complete_refusals(ebs, ec2):
    blocks = {0: os.urandom(BLOCK), 7: os.urandom(BLOCK)}
    snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for i, d in blocks.items():
        put(ebs, snap, i, d)
    with pytest.raises(ClientError) as e:
        ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=3)
    assert err(e)[0] == "ValidationException", "ChangedBlocksCount must match"
    with pytest.raises(ClientError) as e:
        ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=2, Checksum=b64sha(b"nope"),
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert err(e)[0] == "ValidationException", "aggregate checksum must match"
    assert state_of(ec2, snap)["State"] == "pending", "refusals leave it pending"
    # Reads of a pending snapshot are refused.
    with pytest.raises(ClientError) as e:
        ebs.list_snapshot_blocks(SnapshotId=snap)
    assert err(e)[0] == "ValidationException"
    # The raw-digest reading of LINEAR is accepted too.
    raw = b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=2,
                          Checksum=base64.b64encode(hashlib.sha256(raw).digest()).decode(),
                          ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)
    with pytest.raises(ClientError) as e:
        ebs.complete_snapshot(SnapshotId="snap-0123456789abcdef0", ChangedBlocksCount=0)
    assert err(e)[0] == "ResourceNotFoundException"


def test_inactive_snapshot_times_out(ebs, ec2):
    # Timeout=10 minutes, a minute being one second in this cluster.
    snap = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    put(ebs, snap, 0, os.urandom(BLOCK))
    wait_for(lambda: state_of(ec2, snap)["State"] == "error", timeout=60, what="timeout")
    assert "timed out" in state_of(ec2, snap).get("StateMessage", "")
    with pytest.raises(ClientError) as e:
        put(ebs, snap, 1, os.urandom(BLOCK))
    assert err(e)[0] == "ValidationException"


# 4. Reads: paging, tokens, changed blocks ------------------------------------

def test_paging_and_tokens(ebs, raw_ebs, ec2):
    blocks = {i: os.urandom(BLOCK) for i in range(0, 2 * 130, 2)}
    snap = write_snapshot(ebs, ec2, blocks)
    listed, _ = list_all(ebs, snap, MaxResults=100)
    assert [b["BlockIndex"] for b in listed] == sorted(blocks)
    first = ebs.list_snapshot_blocks(SnapshotId=snap, MaxResults=100)
    assert len(first["Blocks"]) == 100 and first["NextToken"]
    r = ebs.list_snapshot_blocks(SnapshotId=snap, StartingBlockIndex=250)
    assert [b["BlockIndex"] for b in r["Blocks"]] == [250, 252, 254, 256, 258]
    # NextToken wins over StartingBlockIndex.
    r = ebs.list_snapshot_blocks(SnapshotId=snap, NextToken=first["NextToken"],
                                 StartingBlockIndex=250)
    assert r["Blocks"][0]["BlockIndex"] == 200

    for bad in (99, 10001):
        with pytest.raises(ClientError) as e:
            raw_ebs.list_snapshot_blocks(SnapshotId=snap, MaxResults=bad)
        assert err(e)[0] == "ValidationException", bad
    with pytest.raises(ClientError) as e:
        ebs.list_snapshot_blocks(SnapshotId=snap, NextToken="bm90IGEgdG9rZW4=")
    assert err(e) == ("ValidationException", "INVALID_PAGE_TOKEN", 400)

    tok = listed[0]["BlockToken"]
    with pytest.raises(ClientError) as e:
        ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=2, BlockToken=tok)
    assert err(e) == ("ValidationException", "INVALID_BLOCK_TOKEN", 400), "token of another block"
    with pytest.raises(ClientError) as e:
        ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockToken="QUJDRA==")
    assert err(e) == ("ValidationException", "INVALID_BLOCK_TOKEN", 400)
    with pytest.raises(ClientError) as e:
        ebs.get_snapshot_block(SnapshotId="snap-0123456789abcdef0", BlockIndex=0, BlockToken=tok)
    assert err(e)[0] == "ResourceNotFoundException"


def test_incremental_and_changed_blocks(ebs, ec2, ebs_cluster, tmp_path):
    parent_blocks = {i: os.urandom(BLOCK) for i in (0, 1, 2, 3, 4100)}
    parent = write_snapshot(ebs, ec2, parent_blocks, size=4)
    changes = {1: os.urandom(BLOCK), 3: ZERO, 5000: os.urandom(BLOCK)}
    child = write_snapshot(ebs, ec2, changes, size=4, parent=parent)
    assert state_of(ec2, child)["State"] == "completed"

    # Unwritten blocks inherit the parent's.
    expect = {**parent_blocks, **changes}
    expect = {i: d for i, d in expect.items() if d != ZERO}
    listed, _ = list_all(ebs, child)
    assert [b["BlockIndex"] for b in listed] == sorted(expect)
    for b in listed:
        assert read_block(ebs, child, b["BlockIndex"], b["BlockToken"]) == expect[b["BlockIndex"]]

    r = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child)
    assert r["VolumeSize"] == 4 and r["BlockSize"] == BLOCK
    changed = {c["BlockIndex"]: c for c in r["ChangedBlocks"]}
    assert sorted(changed) == [1, 3, 5000]
    assert "FirstBlockToken" in changed[1] and "SecondBlockToken" in changed[1]
    assert "SecondBlockToken" not in changed[3], "zeroed in the second"
    assert "FirstBlockToken" not in changed[5000], "new in the second"
    assert read_block(ebs, parent, 1, changed[1]["FirstBlockToken"]) == parent_blocks[1]
    assert read_block(ebs, child, 1, changed[1]["SecondBlockToken"]) == changes[1]
    assert read_block(ebs, parent, 3, changed[3]["FirstBlockToken"]) == parent_blocks[3]
    r = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child,
                                StartingBlockIndex=2)
    assert [c["BlockIndex"] for c in r["ChangedBlocks"]] == [3, 5000]

    other = write_snapshot(ebs, ec2, {0: os.urandom(BLOCK)})
    with pytest.raises(ClientError) as e:
        ebs.list_changed_blocks(FirstSnapshotId=other, SecondSnapshotId=child)
    assert err(e) == ("ValidationException", "UNRELATED_SNAPSHOTS", 400)

    # 6. One store: the incremental EBS-direct snapshot restores with EC2.
    v = ec2.create_volume(AvailabilityZone=AZ_B, SnapshotId=child)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[v], WaiterConfig=FAST)
    img = tmp_path / "expect.img"
    with open(img, "wb") as f:
        f.truncate(4 * GIB)
        for i, d in expect.items():
            f.seek(i * BLOCK)
            f.write(d)
    code, out = nbd_compare(img, ebs_cluster.nbd_uri(v))
    assert code == 0, out


# 6. One store: CreateSnapshot snapshots read block by block -------------------

def test_create_snapshot_readable_block_by_block(ebs, ec2, ebs_cluster, tmp_path):
    vol = ec2.create_volume(AvailabilityZone=AZ_A, Size=1, VolumeType="gp3")["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    written = [3, 4, 100, 2000]
    img = make_image(tmp_path / "vol.img", GIB, written)
    nbd_write(ebs_cluster.nbd_uri(vol), img)
    s1 = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s1], WaiterConfig=FAST)
    listed, _ = list_all(ebs, s1)
    assert [b["BlockIndex"] for b in listed] == written
    raw = img.read_bytes()
    for b in listed:
        i = b["BlockIndex"]
        assert read_block(ebs, s1, i, b["BlockToken"]) == raw[i * BLOCK:(i + 1) * BLOCK]

    # A second snapshot of the same volume is of one lineage with the first.
    with open(img, "r+b") as f:
        f.seek(100 * BLOCK)
        f.write(os.urandom(BLOCK))
    nbd_write(ebs_cluster.nbd_uri(vol), img)
    s2 = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s2], WaiterConfig=FAST)
    r = ebs.list_changed_blocks(FirstSnapshotId=s1, SecondSnapshotId=s2)
    assert [c["BlockIndex"] for c in r["ChangedBlocks"]] == [100]


def test_outpost_local_snapshot_access_denied(ebs, ec2, ebs_cluster):
    arn = ebs_cluster.env["CAIRN_OUTPOST_ARN"]
    v = ec2.create_volume(AvailabilityZone=AZ_A, Size=1, OutpostArn=arn)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[v], WaiterConfig=FAST)
    s = ec2.create_snapshot(VolumeId=v, OutpostArn=arn)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[s], WaiterConfig=FAST)
    with pytest.raises(ClientError) as e:
        ebs.list_snapshot_blocks(SnapshotId=s)
    assert err(e) == ("AccessDeniedException", "UNAUTHORIZED_ACCOUNT", 403)
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=s)
    assert err(e)[0] == "AccessDeniedException"


# 5. Errors are rest-json botocore parses -------------------------------------

def test_error_wire_shape(ebs_cluster):
    import json
    import urllib.error
    import urllib.request
    url = ebs_cluster.endpoint + "/snapshots/snap-0123456789abcdef0/blocks"
    req = urllib.request.Request(url, method="GET",
                                 headers=sign("GET", url, b"", ebs_cluster.env, service="ebs"))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 404
    assert e.value.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    body = json.loads(e.value.read())
    assert body["Reason"] == "SNAPSHOT_NOT_FOUND" and "snap-0123456789abcdef0" in body["message"]


def test_throttled_when_the_metadata_group_is_unreachable(ebs_cluster, ec2):
    """With every metadata member stopped (SIGSTOP), the gateway answers
    RequestThrottledException, which botocore retries; once they resume, the
    same call succeeds. Runs last in this module: it disturbs the cluster."""
    import signal
    import boto3

    pids = []
    for addr in ebs_cluster.data_dir.glob("meta-*/addr.toml"):
        for line in addr.read_text().splitlines():
            if line.startswith("pid"):
                pids.append(int(line.split("=")[1]))
    assert len(pids) == 3
    once = boto3.client(
        "ebs", endpoint_url=ebs_cluster.endpoint, region_name=ebs_cluster.env["AWS_REGION"],
        aws_access_key_id=ebs_cluster.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=ebs_cluster.env["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120),
    )
    token = str(uuid.uuid4())
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(ClientError) as e:
            once.start_snapshot(VolumeSize=1, ClientToken=token)
        assert err(e) == ("RequestThrottledException", "ACCOUNT_THROTTLED", 400)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    # The cluster recovers; the retried call creates the snapshot once.
    snap = wait_for(lambda: _try_start(once, token), timeout=60, interval=0.5, what="metadata to answer again")
    assert snap == _try_start(once, token)
    assert state_of(ec2, snap)["State"] == "pending"


def _try_start(client, token):
    try:
        return client.start_snapshot(VolumeSize=1, ClientToken=token)["SnapshotId"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "RequestThrottledException":
            return None
        raise
