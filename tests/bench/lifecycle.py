"""Benchmark: what keeping data for years costs, in one table.

- Garbage collection: `lifecycle_bench gc` (tests/src/bin/lifecycle_bench.rs)
  puts about a million chunks under 10,000 completed snapshots on one chunk
  node, deletes the snapshots of 10 of its 100 volumes (a tenth of the
  chunks) and times the real collector's pass (then a pass with nothing to
  collect), with the peak memory of the gateway (which marks) and of the
  chunk node (which sweeps and compacts). Beside it, in the same run, restic
  (Debian package, local repository on the same disk) on a repository of the
  same shape built by `restic_repo.py`: a million blobs under 10,000
  snapshots; the snapshots holding a tenth of the blobs are forgotten and
  `restic prune --max-unused 0` is timed.
- Scrub: one node's unthrottled pass beside a direct sequential read of its
  pack files (`lifecycle_bench repair`).
- Re-replication: that node killed with its disk and removed; the time until
  a pass ends with every chunk back at RF 3.

Not a test: numbers vary with the machine. Environment: BENCH_GC_VOLUMES
(default 100; the shape scales with it), BENCH_REPAIR_BLOCKS (default 2048
blocks of 512 KiB), BENCH_SKIP_RESTIC=1.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import restic_repo  # noqa: E402

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/cairn-target"))
PROFILE = os.environ.get("CAIRN_PROFILE", "debug")  # scripts/bench sets it (release)
BENCH = TARGET / PROFILE / "lifecycle_bench"
MIB = 1 << 20


def lifecycle_bench(*args):
    env = dict(os.environ, RUST_BACKTRACE="0",
               CAIRN_BIN=os.environ.get("CAIRN_BIN", str(TARGET / PROFILE / "cairn")))
    r = subprocess.run([str(BENCH), *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"lifecycle_bench {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    print(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "", file=sys.stderr)
    return json.loads(r.stdout)


def mib(b):
    return f"{b / MIB:,.0f} MiB"


def main():
    volumes = int(os.environ.get("BENCH_GC_VOLUMES", "100"))
    per_volume, first, changed, deleted = 100, 5000, 50, max(1, volumes // 10)
    gc = lifecycle_bench("gc", "--volumes", str(volumes), "--snapshots-per-volume",
                         str(per_volume), "--first-blocks", str(first),
                         "--changed-blocks", str(changed), "--deleted-volumes", str(deleted))
    pas, steady = gc["pass"], gc["steady_pass"]
    print(f"cairn gc: {json.dumps(pas)[:2000]}", file=sys.stderr)

    restic = None
    if os.environ.get("BENCH_SKIP_RESTIC") != "1":
        # The repository on the disk Cairn used; the source files (about
        # 4 GiB for a million) in memory, so that making them is not the
        # slowest part of the benchmark.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryDirectory(prefix="cairn-bench-restic-") as d, \
                tempfile.TemporaryDirectory(prefix="cairn-bench-src-", dir=shm) as src:
            blobs = gc["data_chunks"]  # not pages or roots: restic's trees are its own
            made = restic_repo.make_repo(Path(d) / "repo", Path(src), blobs=blobs,
                                         real_backups=max(1, volumes // 10),
                                         snapshots=gc["snapshots"])
            pruned = restic_repo.forget_and_prune(Path(d) / "repo", forget_fraction=0.1)
            restic = {**made, **pruned}
            restic.pop("prune_stderr", None)
            print(f"restic: {json.dumps(restic)}", file=sys.stderr)

    rep = lifecycle_bench("repair", "--blocks", os.environ.get("BENCH_REPAIR_BLOCKS", "2048"))

    rows = [
        ("snapshots / stored chunks", f"{gc['snapshots']:,} / {gc['chunks']:,}",
         f"{restic['snapshots']:,} / {restic['blobs']:,} blobs" if restic else "-", ""),
        ("deleted (forgotten) snapshots", f"{gc['deleted_snapshots']:,}",
         f"{restic['snapshots_forgotten']:,}" if restic else "-", ""),
        ("collect: wall time", f"{gc['pass_secs']:.1f} s",
         f"{restic['prune_s']:.1f} s (prune --max-unused 0)" if restic else "-",
         f"{restic['prune_s'] / gc['pass_secs']:.2f}" if restic else ""),
        ("collect: peak memory", f"{mib(gc['gateway_peak_rss'])} gateway + "
         f"{mib(gc['chunk_node_peak_rss'])} chunk node",
         f"{restic['prune_max_rss_kib'] / 1024:,.0f} MiB" if restic else "-", ""),
        ("collect: chunks examined / deleted", f"{pas['examined']:,} / {pas['deleted']:,}",
         "", ""),
        ("collect: mark / sweep / compact", f"{pas['mark_ms'] / 1000:.1f} / "
         f"{pas['sweep_ms'] / 1000:.1f} / {pas['compact_ms'] / 1000:.1f} s "
         f"({pas['mark']['roots']:,} manifests, {pas['mark']['pages_read']:,} pages, "
         f"{pas['mark']['entries']:,} entries)",
         f"{restic['trees']} trees walked" if restic else "", ""),
        ("space given back (du)", f"{mib(gc['du_before'])} -> {mib(gc['du_after'])}",
         f"{mib(restic['repo_bytes_before'])} -> {mib(restic['repo_bytes_after'])}"
         if restic else "-", ""),
        ("next pass, nothing to collect", f"{gc['steady_pass_secs']:.1f} s", "", ""),
        ("scrub, one node, unthrottled", f"{rep['scrub_mib_s']:,.0f} MiB/s "
         f"({mib(rep['scrub_bytes'])} in {rep['scrub_secs']:.1f} s)",
         f"disk direct read {rep['direct_read_mib_s']:,.0f} MiB/s",
         f"{rep['scrub_mib_s'] / rep['direct_read_mib_s']:.2f}x of the disk"),
        ("re-replication of one lost node", f"{rep['repair_secs']:.1f} s for "
         f"{mib(rep['node_bytes'])} ({rep['repair_mib_s']:,.0f} MiB/s, "
         f"{rep['repair'].get('copied', 0):,} replicas)", "", ""),
    ]
    print("| | Cairn | peer (restic, disk) | ratio peer/Cairn |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
