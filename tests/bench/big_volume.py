"""Benchmark: a 16 TiB sparse volume. On one `cairn up` cluster:

- CreateVolume of 16,384 GiB (gp2's largest; two 8 TiB segment files on the
  volume host, as ext4 holds no 16 TiB file);
- 1 GiB written over NBD in 2,048 blocks of random bytes spread over the
  whole volume, then CreateSnapshot (s1) and ListSnapshotBlocks of it;
- 0.1% of the volume's blocks changed (33,554 blocks, one in every 1,000,
  touching every manifest page; 16 distinct contents, so dedup keeps the
  disk use small), then CreateSnapshot (s2) and ListChangedBlocks s1 -> s2:
  the first page of 10,000 and every page, each timed;
- CreateVolume from s1 (a lazy restore of 16 TiB) and every written block
  read back over NBD and compared; CopySnapshot of s1 to the Outpost;
- the peak resident memory (VmHWM) of every process, per step (the highest)
  and over the run.

CAIRN_BIG_COPY_MEMORY_MIB sets the chunk nodes' copy memory (`cairn up
--copy-memory-mib`, default 480). Prints one table. Not a test: numbers
vary with the machine.
"""
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

from cluster import Cluster  # noqa: E402
from nbdclient import NbdClient  # noqa: E402

BLOCK = 512 * 1024
SIZE_GIB = int(os.environ.get("CAIRN_BIG_GIB", "16384"))
BLOCKS = SIZE_GIB * 2048
WRITTEN = 2048  # 1 GiB
CHANGE_EVERY = 1000  # 0.1% of the blocks
FAST = {"Delay": 1, "MaxAttempts": 3600}
COPY_MEMORY_MIB = int(os.environ.get("CAIRN_BIG_COPY_MEMORY_MIB", "480"))


def poll(pred, what, limit=3600):
    started = time.monotonic()
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() - started > limit:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.02 if time.monotonic() - started < 2 else 0.2)


def timed(fn):
    t = time.monotonic()
    out = fn()
    return out, time.monotonic() - t


def pids(c):
    """{process name: pid} of every process the cluster runs."""
    out = {}
    for addr in sorted(c.data_dir.glob("*/addr.toml")):
        pid = next((int(line.split("=")[1]) for line in addr.read_text().splitlines()
                    if line.startswith("pid")), None)
        if pid is not None:
            out[addr.parent.name] = pid
    return out


class Peaks:
    """Peak resident memory (VmHWM) per process, per step and over the run:
    each step starts by resetting every process's peak (`clear_refs` 5), so
    a step's figure is what that step took, not what an earlier one left."""

    def __init__(self, c):
        self.c = c
        self.run = {}

    def reset(self):
        for pid in pids(self.c).values():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass  # gone, or not ours: its peak then covers the run so far

    def read(self):
        """{process name: MiB} since the last reset; the run's peaks updated."""
        out = {}
        for name, pid in pids(self.c).items():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # gone
            hwm = next((int(line.split()[1]) for line in status.splitlines()
                        if line.startswith("VmHWM")), None)
            if hwm is None:
                continue  # a zombie has no memory to report
            out[name] = hwm / 1024
            self.run[name] = max(self.run.get(name, 0), out[name])
        return out

    def step(self, fn):
        """(fn's result, seconds, the process that peaked highest and its MiB)."""
        self.reset()
        out, t = timed(fn)
        peaks = self.read()
        top = max(peaks, key=peaks.get) if peaks else "-"
        return out, t, f"{top} {peaks.get(top, 0):.0f}"


def main():
    work = Path(tempfile.mkdtemp(prefix="cairn-bench-big-"))
    rng = random.Random(16)
    c = Cluster(work / "cairn", args=["--copy-memory-mib", str(COPY_MEMORY_MIB)]).start()
    peaks = Peaks(c)
    rows = []
    try:
        ec2, ebs = c.client(), c.client("ebs")
        region, arn = c.env["AWS_REGION"], c.env["CAIRN_OUTPOST_ARN"]

        def create_volume(**kw):
            v = ec2.create_volume(AvailabilityZone="cairn-1a", VolumeType="gp2", **kw)["VolumeId"]
            ec2.get_waiter("volume_available").wait(VolumeIds=[v], WaiterConfig=FAST)
            return v

        vol, t, m = peaks.step(lambda: create_volume(Size=SIZE_GIB))
        rows.append((f"CreateVolume, {SIZE_GIB:,} GiB", t, "", m))

        stride = BLOCKS // WRITTEN
        written = {k * stride + rng.randrange(stride): rng.randbytes(BLOCK) for k in range(WRITTEN)}
        nbd = NbdClient(c.nbd, vol)
        assert nbd.size == SIZE_GIB << 30, nbd.size

        def write(blocks):
            for i, data in sorted(blocks.items()):
                nbd.write(i * BLOCK, data)
            nbd.flush()

        _, t, m = peaks.step(lambda: write(written))
        rows.append(("write 1 GiB over NBD (2,048 blocks spread)", t, f"{1024 / t:.0f} MiB/s", m))

        def snapshot():
            s = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
            poll(lambda: ec2.describe_snapshots(SnapshotIds=[s])["Snapshots"][0]["State"]
                 == "completed", "snapshot")
            return s

        s1, t, m = peaks.step(snapshot)
        rows.append(("CreateSnapshot to completed, 1 GiB written", t, "", m))

        def list_all(call, **kw):
            out, token, pages, first = [], None, 0, None
            while True:
                args = dict(kw, MaxResults=10000, **({"NextToken": token} if token else {}))
                page, took = timed(lambda: call(**args))
                first = took if first is None else first
                pages += 1
                out += page.get("Blocks") or page.get("ChangedBlocks") or []
                token = page.get("NextToken")
                if not token:
                    return out, first, pages

        (listed, first, pages), t, m = peaks.step(lambda: list_all(ebs.list_snapshot_blocks, SnapshotId=s1))
        assert sorted(b["BlockIndex"] for b in listed) == sorted(written), "ListSnapshotBlocks"
        rows.append(("ListSnapshotBlocks, first page", first, f"{len(listed):,} blocks", ""))
        rows.append(("ListSnapshotBlocks, every page", t, f"{pages} page(s)", m))

        patterns = [rng.randbytes(BLOCK) for _ in range(16)]
        changed = {i: patterns[i % 16] for i in range(rng.randrange(CHANGE_EVERY), BLOCKS,
                                                      CHANGE_EVERY)}
        _, t, m = peaks.step(lambda: write(changed))
        mib = len(changed) * BLOCK / 2**20
        rows.append((f"write 0.1% ({len(changed):,} blocks) over NBD", t, f"{mib / t:.0f} MiB/s", m))
        s2, t, m = peaks.step(snapshot)
        rows.append(("CreateSnapshot to completed, 0.1% changed", t, f"{mib / t:.0f} MiB/s", m))

        (diff, first, pages), t, m = peaks.step(lambda: list_all(
            ebs.list_changed_blocks, FirstSnapshotId=s1, SecondSnapshotId=s2))
        assert sorted(b["BlockIndex"] for b in diff) == sorted(changed), "ListChangedBlocks"
        rows.append(("ListChangedBlocks s1 -> s2, first page of 10,000", first, "", ""))
        rows.append(("ListChangedBlocks s1 -> s2, every page", t,
                     f"{len(diff):,} blocks, {pages} pages", m))

        restored, t, m = peaks.step(lambda: create_volume(SnapshotId=s1))
        rows.append(("CreateVolume from s1 (lazy restore)", t, "", m))
        reader = NbdClient(c.nbd, restored)

        def read_back():
            return all(reader.read(i * BLOCK, BLOCK) == data for i, data in sorted(written.items()))

        same, t, m = peaks.step(read_back)
        rows.append(("read back the 2,048 written blocks", t, f"identical: {same}", m))
        reader.close()
        nbd.close()

        def copy():
            cp = ec2.copy_snapshot(SourceSnapshotId=s1, SourceRegion=region,
                                   DestinationOutpostArn=arn)["SnapshotId"]
            poll(lambda: ec2.describe_snapshots(SnapshotIds=[cp])["Snapshots"][0]["State"]
                 == "completed", "copy")

        _, t, m = peaks.step(copy)
        rows.append(("CopySnapshot s1 region -> Outpost", t, "", m))
        rss = peaks.run
    finally:
        c.stop()
        # 17 GiB of volume files and chunks: not left in the temp dir.
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n16 TiB sparse volume ({SIZE_GIB:,} GiB, {BLOCKS:,} blocks of 512 KiB),"
          f" copy memory {COPY_MEMORY_MIB} MiB per chunk node\n")
    print("| step | seconds | | highest peak RSS in the step, MiB |")
    print("|---|---:|---|---|")
    for name, t, note, mem in rows:
        print(f"| {name} | {t:.3f} | {note} | {mem} |")
    print("\npeak resident memory (VmHWM) over the steps, MiB\n")
    print("| process | MiB |")
    print("|---|---:|")
    for name, mib in rss.items():
        print(f"| {name} | {mib:.0f} |")
    if not same:
        sys.exit("restored blocks differ")


if __name__ == "__main__":
    main()
