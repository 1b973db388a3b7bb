"""EBS direct API throughput (a benchmark, not a test): N concurrent boto3
PutSnapshotBlock streams into one snapshot, then N concurrent
GetSnapshotBlock streams reading it back, against a `cairn up` cluster.

    CAIRN_BIN=$CARGO_TARGET_DIR/debug/cairn .venv/bin/python tests/bench/ebs_throughput.py [MiB per run]

Starts its own cluster in a temporary directory (or uses AWS_ENDPOINT_URL
etc. from the environment when CAIRN_BENCH_ENDPOINT=1), prints one table in
MiB/s. Blocks are random (no dedup, no zero shortcut)."""
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from cluster import Cluster  # noqa: E402
from snapshot_vs_restic import disk_speed  # noqa: E402

BLOCK = 524288
MIB = 1 << 20
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/cairn-target"))
RUST_CLIENT = TARGET / os.environ.get("CAIRN_PROFILE", "debug") / "ebs_bench"


def rust_client(env, streams, total_mib):
    """The same workload from `ebs_bench` (tests/src/bin/ebs_bench.rs): one
    tokio task per connection, so the client is not what bounds it."""
    r = subprocess.run([str(RUST_CLIENT), "--streams", str(streams), "--mib", str(total_mib)],
                       env={**os.environ, **env, "RUST_BACKTRACE": "0"}, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ebs_bench failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout)
    return out["put_mib_s"], out["get_mib_s"], out["complete_secs"]


def client(env, conns):
    return boto3.client(
        "ebs", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=conns, retries={"max_attempts": 10, "mode": "standard"}),
    )


def run(env, streams, total_mib):
    ebs = client(env, streams)
    ec2 = boto3.client(
        "ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    nblocks = total_mib * MIB // BLOCK
    # A pool of distinct random blocks, made unique per index by a stamp.
    pool = [os.urandom(BLOCK) for _ in range(16)]

    def block(i):
        b = bytearray(pool[i % len(pool)])
        b[:8] = i.to_bytes(8, "little")
        return bytes(b)

    blocks = [block(i) for i in range(nblocks)]
    sums = [base64.b64encode(hashlib.sha256(b).digest()).decode() for b in blocks]
    size_gib = max(1, (nblocks * BLOCK + (1 << 30) - 1) >> 30)
    snap = ebs.start_snapshot(VolumeSize=size_gib)["SnapshotId"]

    def put(i):
        ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=blocks[i], DataLength=BLOCK,
                               Checksum=sums[i], ChecksumAlgorithm="SHA256")

    t = time.monotonic()
    with ThreadPoolExecutor(streams) as ex:
        list(ex.map(put, range(nblocks)))
    put_s = time.monotonic() - t
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=nblocks)
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig={"Delay": 1, "MaxAttempts": 600})
    tokens, token = [], None
    while True:
        args = {"SnapshotId": snap, **({"NextToken": token} if token else {})}
        r = ebs.list_snapshot_blocks(**args)
        tokens += [(b["BlockIndex"], b["BlockToken"]) for b in r["Blocks"]]
        token = r.get("NextToken")
        if not token:
            break

    def get(it):
        i, tok = it
        data = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockToken=tok)["BlockData"].read()
        assert data == blocks[i]

    t = time.monotonic()
    with ThreadPoolExecutor(streams) as ex:
        list(ex.map(get, tokens))
    get_s = time.monotonic() - t
    return nblocks * BLOCK / MIB / put_s, nblocks * BLOCK / MIB / get_s


def main():
    total_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    with tempfile.TemporaryDirectory() as d:
        c = None
        if os.environ.get("CAIRN_BENCH_ENDPOINT") == "1":
            env = dict(os.environ)
        else:
            c = Cluster(Path(d) / "data").start()
            env = c.env
        try:
            rows = [(f"boto3, {n} threads", *run(env, n, total_mib)) for n in (8, 64)]
            put, get, complete_s = rust_client(env, 64, total_mib)
            rows.append(("Rust client (ebs_bench), 64 connections", put, get))
            disk_write, disk_read = disk_speed(d)
        finally:
            if c:
                c.stop()
    print(f"EBS direct API throughput, {total_mib} MiB of random 512 KiB blocks per run, one snapshot")
    print("| client | PutSnapshotBlock MiB/s | GetSnapshotBlock MiB/s |")
    print("|---|---:|---:|")
    for n, p, g in rows:
        print(f"| {n} | {p:.1f} | {g:.1f} |")
    print("| AWS (published) | ~477 (500 MB/s at 100 connections) | ~477 |")
    # Every block put is written RF times (3, the default) on this one disk.
    bound = disk_write / 3
    best_put = max(p for _, p, _ in rows)
    print(f"Disk (dd, direct I/O): write {disk_write:.0f} MiB/s, read {disk_read:.0f} MiB/s. "
          f"RF-3 bound for PutSnapshotBlock (disk write / 3): {bound:.0f} MiB/s; "
          f"best put {best_put:.0f} MiB/s = {best_put / bound:.0%} of it.")
    print(f"CompleteSnapshot of {total_mib * MIB // BLOCK} blocks until the snapshot lists "
          f"(Rust client's run: checked, sealed, listable): {complete_s:.2f} s.")


if __name__ == "__main__":
    main()
