"""Benchmark: Cairn snapshots against restic, on the same image, in the same run.

A volume of SIZE_GIB (default 4) with realistic content (about 30% zero blocks,
40% random, 30% blocks repeated from a small pool) is written over NBD; then a
full snapshot; then 1% of the blocks are rewritten and an incremental snapshot
taken; then a restore with a full read-back. restic (Debian package, local
repository on the same disk) backs up the same image, full and incremental,
and restores it, with the same read-back. Both restores start with a cold
page cache (see `cold`). Prints one table. Not a test: numbers vary with the
machine.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

from cluster import Cluster, wait_for  # noqa: E402
from nbdclient import NbdClient  # noqa: E402
from util import http_json  # noqa: E402

BLOCK = 524288
SIZE_GIB = int(os.environ.get("BENCH_SIZE_GIB", "4"))
FAST = {"Delay": 1, "MaxAttempts": 3600}


def make_image(path, nblocks, seed=7):
    rng = random.Random(seed)
    pool = [os.urandom(BLOCK) for _ in range(32)]
    kinds = []
    with open(path, "wb") as f:
        f.truncate(nblocks * BLOCK)
        for i in range(nblocks):
            r = rng.random()
            if r < 0.30:
                kinds.append("zero")
                continue
            f.seek(i * BLOCK)
            if r < 0.70:
                f.write(os.urandom(BLOCK))
                kinds.append("random")
            else:
                f.write(pool[rng.randrange(len(pool))])
                kinds.append("repeat")
    return kinds


def rewrite_one_percent(img, nblocks, nbd_addr, vol):
    """Rewrites 1% of the blocks (the same ones every run) with new random
    bytes, in the image and on the volume over NBD."""
    rng = random.Random(11)
    nbd = NbdClient(nbd_addr, vol)
    with open(img, "r+b") as f:
        for i in rng.sample(range(nblocks), max(1, nblocks // 100)):
            data = os.urandom(BLOCK)
            f.seek(i * BLOCK)
            f.write(data)
            nbd.write(i * BLOCK, data)
    nbd.flush()
    nbd.close()


def stored_bytes(cluster):
    return sum(n["bytes"] for n in http_json(cluster.endpoint + "/_cairn/chunks")["nodes"])


def du(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def timed(fn):
    # Each step starts with nothing dirty in the page cache: writeback left
    # from preparing the image (or from the step before) would otherwise
    # land in whichever step comes next.
    os.sync()
    t = time.monotonic()
    out = fn()
    return time.monotonic() - t, out


def profiled(name, fn):
    """`fn()`, with every CPU sampled by `perf record` meanwhile when
    BENCH_PERF names a directory (`BENCH_PERF/name.data`; read it with
    `perf report -i`): the profile of a step, for finding what bounds it."""
    out_dir = os.environ.get("BENCH_PERF")
    if not out_dir:
        return fn()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    # BENCH_PERF_ARGS: e.g. "--call-graph dwarf,16384 -F 199" for call chains.
    args = os.environ.get("BENCH_PERF_ARGS", "-F 999").split()
    # `-- sleep`: perf stops by itself should this script die before its
    # SIGINT (system-wide recording would otherwise go on).
    perf = subprocess.Popen(["perf", "record", "-a", *args, "-o", str(Path(out_dir) / f"{name}.data"),
                             "--", "sleep", "7200"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return fn()
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait()


def cold(img):
    """Before a restore: the page cache is emptied, so a restore reads its
    repository from disk, as a restore does days after the backup (restic's
    repository would otherwise be served from memory, having just been
    written; Cairn reads its packs with O_DIRECT either way). Then the
    reference image, which only the read-back's check reads, is read back
    into memory, so neither side's check waits for the disk."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        print(f"bench: cannot drop the page cache ({e}); restores start warm", flush=True)
    with open(img, "rb") as f:
        while f.read(1 << 24):
            pass


def disk_speed(work):
    """Sequential write and read of this disk, in MiB/s, with direct I/O
    (dd, 1 GiB in 4 MiB blocks, the file on the benchmark's own disk): the
    bound each step is compared with."""
    path = Path(work) / "dd.bin"

    def dd(*args):
        out = subprocess.run(["dd", *args, "bs=4M", "count=256"], capture_output=True, text=True, check=True)
        line = [l for l in out.stderr.splitlines() if "copied" in l][-1]
        secs = float(line.split("copied,")[1].split()[0])
        return 1024 / secs

    write = dd("if=/dev/zero", f"of={path}", "oflag=direct", "conv=fsync")
    read = dd(f"if={path}", "of=/dev/null", "iflag=direct")
    path.unlink()
    return write, read


def hydration(c, volume):
    """What the gateway says of `volume`'s hydration (`done`, `hydrated_bytes`
    of `total_bytes`)."""
    return http_json(f"{c.endpoint}/_cairn/volumes/{volume}/hydration")


def first_reads(ec2, c, snapshot, nblocks, count=400):
    """Restores `snapshot` into a new volume and, as soon as it is
    available, reads 4 KiB at `count` random offsets over NBD, one at a
    time, each timed: what a booting instance sees while its volume still
    hydrates. Returns the latencies in ms and how much of the volume had
    hydrated when the last read ended."""
    v = ec2.create_volume(AvailabilityZone="cairn-1b", SnapshotId=snapshot)["VolumeId"]
    wait_for(lambda: ec2.describe_volumes(VolumeIds=[v])["Volumes"][0]["State"] == "available",
             timeout=3600, interval=0.02, what="restored volume")
    rng = random.Random(5)
    nbd = NbdClient(c.nbd, v)
    lat = []
    for _ in range(count):
        off = rng.randrange(nblocks) * BLOCK + rng.randrange(BLOCK // 4096) * 4096
        t = time.monotonic()
        nbd.read(off, 4096)
        lat.append((time.monotonic() - t) * 1000)
    nbd.close()
    h = hydration(c, v)
    done = (h.get("hydrated_bytes") or 0) / max(1, h.get("total_bytes") or 1)
    # Where the slow ones were: at the start (the volume just opened, caches
    # cold) or all along (competing with the hydrator).
    slow = [i for i, ms in enumerate(lat) if ms > 20]
    print(f"bench: first reads over 20 ms: {len(slow)}, at positions {slow[:12]}", flush=True)
    return sorted(lat), done


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


def main():
    if shutil.which("restic") is None:
        run(["apt-get", "install", "-y", "-qq", "restic"])
    work = Path(tempfile.mkdtemp(prefix="cairn-bench-"))
    nblocks = SIZE_GIB * 2048
    img = work / "disk.img"
    print(f"bench: building a {SIZE_GIB} GiB image in {work}", flush=True)
    make_image(img, nblocks)
    mib = nblocks * BLOCK / (1 << 20)
    rdata = work / "restic-data"
    rdata.mkdir()
    run(["cp", "--sparse=always", str(img), str(rdata / "disk.img")])

    only_cairn = os.environ.get("BENCH_ONLY") == "cairn"  # for profiling runs
    c = Cluster(work / "cairn").start()
    rows = []
    try:
        ec2 = c.client()
        vol = ec2.create_volume(AvailabilityZone="cairn-1a", Size=SIZE_GIB, VolumeType="gp3")["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
        t_write, _ = timed(lambda: run(["qemu-img", "convert", "-n", "-W", "-f", "raw", "-O", "raw", str(img), c.nbd_uri(vol)]))
        print(f"bench: wrote the image over NBD in {t_write:.1f}s", flush=True)

        def snap_polled():
            # Polled every 20 ms for the first 2 s (an incremental snapshot is
            # done by then), then every 200 ms: boto3 costs CPU the cluster
            # shares.
            s = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
            started = time.monotonic()
            while ec2.describe_snapshots(SnapshotIds=[s])["Snapshots"][0]["State"] != "completed":
                if time.monotonic() - started > 3600:
                    raise AssertionError("snapshot did not complete")
                time.sleep(0.02 if time.monotonic() - started < 2 else 0.2)
            return s

        b0 = stored_bytes(c)
        print(f"bench: full snapshot starts at {time.time():.1f}", flush=True)
        t_full, s1 = profiled("full", lambda: timed(snap_polled))
        b1 = stored_bytes(c)

        rewrite_one_percent(img, nblocks, c.nbd, vol)
        t_incr, s2 = timed(snap_polled)
        b2 = stored_bytes(c)

        def restore():
            # The restored volume is read back whole over NBD and compared,
            # byte for byte, with the image as written (qemu-img compare
            # exits 0 only when they are identical). The bytes are written
            # once, into the restored volume, as restic writes its file once.
            v = ec2.create_volume(AvailabilityZone="cairn-1b", SnapshotId=s2)["VolumeId"]
            wait_for(lambda: ec2.describe_volumes(VolumeIds=[v])["Volumes"][0]["State"] == "available",
                     timeout=3600, interval=0.02, what="restored volume")
            print(f"bench: restored volume available at {time.time():.1f}", flush=True)
            cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(img), c.nbd_uri(v)],
                                 capture_output=True, text=True)
            return cmp.returncode == 0, v

        cold(img)
        print(f"bench: restore starts at {time.time():.1f}", flush=True)
        t_restore, (same, restored) = profiled("restore", lambda: timed(restore))
        print(f"bench: restore read back at {time.time():.1f}", flush=True)
        # The read-back alone: the same volume read again once whole and with
        # a cold cache. Restore + read-back can be no faster than this.
        wait_for(lambda: hydration(c, restored)["done"], timeout=3600, interval=0.05, what="hydrated")
        cold(img)
        t_reread, _ = profiled("reread", lambda: timed(lambda: subprocess.run(
            ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(img), c.nbd_uri(restored)],
            capture_output=True)))
        cold(img)
        lat, hydrated = first_reads(ec2, c, s2, nblocks)
        rows.append(("full snapshot", t_full, mib, b1 - b0))
        rows.append(("incremental (1%)", t_incr, mib, b2 - b1))
        rows.append(("restore + read-back", t_restore, mib, 0))
    finally:
        c.stop()

    disk_write, disk_read = disk_speed(work)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    first_reads_line = (f"First reads while hydrating ({len(lat)} random 4 KiB reads, one at a time, right after the "
                        f"restored volume became available; {hydrated:.0%} hydrated at the end): "
                        f"p50 {p(0.50):.1f} ms, p99 {p(0.99):.1f} ms, max {lat[-1]:.1f} ms.")
    reread_line = (f"Read-back alone (the restored volume read again over NBD once whole, cold cache): "
                   f"{t_reread:.2f} s, {mib / t_reread:.0f} MiB/s.")
    if only_cairn:
        print(reread_line)
        for name, t, m, stored in rows:
            print(f"{name:<20} {t:>8.2f} s {m / t:>9.1f} MiB/s {stored / 2**20:>9.1f} MiB stored")
        print(f"restored bytes identical: {same}")
        print(first_reads_line)
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
        return
    # restic, same image, same disk.
    repo = work / "restic-repo"
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(repo))
    run(["restic", "init"], env=env)
    t_rfull, _ = timed(lambda: run(["restic", "backup", "--quiet", str(rdata)], env=env))
    r1 = du(repo)
    run(["cp", "--sparse=always", str(img), str(rdata / "disk.img")])  # now with the 1% rewritten
    t_rincr, _ = timed(lambda: run(["restic", "backup", "--quiet", str(rdata)], env=env))
    r2 = du(repo)
    rdir = work / "restic-restore"
    restored = rdir / rdata.relative_to("/") / "disk.img"

    def restic_restore():
        # The same read-back as Cairn's: the restored file compared whole
        # with the image by the same tool.
        run(["restic", "restore", "latest", "--target", str(rdir)], env=env)
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(img), str(restored)],
                             capture_output=True, text=True)
        return cmp.returncode == 0

    cold(img)
    t_rrest, restic_same = timed(restic_restore)
    restic_rows = [t_rfull, t_rincr, t_rrest]
    restic_bytes = [r1, r2 - r1, 0]

    print()
    print(f"Snapshot benchmark: {SIZE_GIB} GiB volume (30% zero, 40% random, 30% repeated blocks); "
          f"{os.cpu_count()} cores; restic {subprocess.run(['restic', 'version'], capture_output=True, text=True).stdout.split()[1]}")
    print(f"restored bytes identical: cairn {same}, restic {restic_same}")
    hdr = f"| {'step':<20} | {'cairn s':>8} | {'cairn MiB/s':>11} | {'cairn stored':>13} | {'restic s':>8} | {'restic MiB/s':>12} | {'restic stored':>13} | {'speedup':>7} |"
    print(hdr)
    print("|" + "|".join("-" * (len(x)) for x in hdr.split("|")[1:-1]) + "|")
    for (name, t, m, stored), rt, rb in zip(rows, restic_rows, restic_bytes):
        print(f"| {name:<20} | {t:>8.2f} | {m / t:>11.1f} | {stored / 2**20:>9.1f} MiB | {rt:>8.2f} | {m / rt:>12.1f} | {rb / 2**20:>9.1f} MiB | {rt / t:>6.1f}x |")
    print("cairn stored counts every replica (RF 3); restic keeps one copy.")
    # The bounds: what the disk must do at least, at its sequential speed.
    nonzero = mib * (1 - 0.30)
    full_bound = disk_write / (rows[0][3] / 2**20 / mib)
    restore_min = nonzero / disk_read + nonzero / disk_write + nonzero / disk_read
    print()
    print(f"Disk (dd, direct I/O, 1 GiB in 4 MiB blocks): write {disk_write:.0f} MiB/s, read {disk_read:.0f} MiB/s.")
    print("| step | bound | cairn | of the bound |")
    print("|---|---|---|---:|")
    print(f"| full snapshot | {full_bound:.0f} MiB/s of volume (disk write / {rows[0][3] / 2**20 / mib:.2f} bytes stored per volume byte) "
          f"| {mib / rows[0][1]:.0f} MiB/s | {mib / rows[0][1] / full_bound:.0%} |")
    print(f"| restore + read-back | {restore_min:.2f} s (the {nonzero:.0f} MiB not zero read once from packs, written once, read back once) "
          f"| {rows[2][1]:.2f} s | {restore_min / rows[2][1]:.0%} |")
    print(reread_line)
    print(first_reads_line)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
