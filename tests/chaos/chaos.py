#!/usr/bin/env python3
"""Cairn's chaos suite: faults under a live snapshot workload, then DESIGN.md's
invariants 1 to 5 (see workload.py for what each run checks).

    tests/chaos/chaos.py --docker   # deploy/docker-compose.yml, every fault kind
    tests/chaos/chaos.py --local    # processes on loopback: kill, SIGSTOP, restart

Environment: CHAOS_RUNS=N repeats the fault cycle N times (default 1);
CHAOS_VOLUMES (default 20), CHAOS_PHASES (snapshots per volume, default 2),
CHAOS_FAULTS (comma-separated subset of the fault names), CHAOS_SEED,
CHAOS_PAUSE_SECS (how long a volume host stays paused, default 25: past the
gateway's copy-host timeout), CHAOS_KEEP=1 leaves the cluster running.

Prints one line per run (fault, snapshots completed / errored / lost, verdict)
and a closing `N passed, M failed` line; exits 1 when a run failed.
"""
import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # noqa: E402


def env_int(name, default):
    return int(os.environ.get(name, default))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--docker", action="store_true", help="the deploy/ compose cluster")
    mode.add_argument("--local", action="store_true", help="processes on loopback")
    args = ap.parse_args()

    runs = env_int("CHAOS_RUNS", 1)
    volumes = env_int("CHAOS_VOLUMES", 20)
    phases = env_int("CHAOS_PHASES", 2)
    seed = env_int("CHAOS_SEED", random.randrange(1 << 30))
    pause_secs = float(os.environ.get("CHAOS_PAUSE_SECS", "25"))
    only = [f for f in os.environ.get("CHAOS_FAULTS", "").split(",") if f]

    if args.docker:
        import compose
        cluster = compose.ComposeCluster()
        kinds = compose.faults(cluster, pause_secs)
        label = "compose"
    else:
        import local
        cluster = local.LocalCluster()
        kinds = local.faults(cluster, pause_secs)
        label = "loopback"
    if only:
        unknown = set(only) - {k.name for k in kinds}
        if unknown:
            ap.error(f"unknown faults {sorted(unknown)}; known: {[k.name for k in kinds]}")
        kinds = [k for k in kinds if k.name in only]

    print(f"chaos ({label}): {runs} cycle(s) of {len(kinds)} faults, {volumes} volumes x "
          f"{phases} snapshots, seed {seed}", flush=True)
    results = []
    t0 = time.monotonic()
    clients = None
    with tempfile.TemporaryDirectory(prefix="cairn-chaos-") as workdir:
        try:
            cluster.up()
            clients = workload.Clients(cluster.gateways,
                                       credentials=getattr(cluster, "credentials", None))
            n = 0
            for cycle in range(runs):
                for fault in kinds:
                    n += 1
                    try:
                        r = workload.run_once(clients, fault, volumes=volumes, phases=phases,
                                              outpost_arn=cluster.outpost_arn, workdir=workdir,
                                              seed=seed + n)
                    except Exception as e:  # the cluster never came back, or the suite broke
                        r = workload.RunResult(fault=fault.name,
                                               failures=[f"run aborted: {type(e).__name__}: {e}"])
                    results.append(r)
                    verdict = "PASS" if r.ok else "FAIL"
                    print(f"run {n:3d}  {r.fault:<48} completed {r.completed:3d}  "
                          f"errored {r.errored:3d}  lost {r.lost:2d}  stuck {r.stuck:2d}  "
                          f"{r.seconds:5.0f}s  {verdict}", flush=True)
                    for msg, count in sorted(r.messages.items(), key=lambda m: -m[1])[:3]:
                        print(f"          error x{count}: {msg[:160]}", flush=True)
                    for line in r.notes:
                        print(f"          {line}", flush=True)
                    for line in r.failures[:20]:
                        print(f"          {line}", flush=True)
                    if not r.ok:
                        for s in getattr(fault, "hit", []) or []:
                            print(f"          --- last log lines of {s}:\n"
                                  + indent(cluster.logs(s, 15)), flush=True)
            report = getattr(cluster, "capacity_report", lambda: None)()
            if report is not None:
                print(f"capacity tier: packs in the bucket per chunk node {report}", flush=True)
                if not sum(report.values()):
                    results.append(workload.RunResult(
                        fault="capacity-tier", failures=["no pack reached the bucket"]))
        finally:
            if os.environ.get("CHAOS_KEEP") != "1":
                cluster.down()
    passed = sum(r.ok for r in results)
    failed = len(results) - passed
    total = {k: sum(getattr(r, k) for r in results) for k in ("completed", "errored", "lost", "stuck")}
    print(f"snapshots: {total['completed']} completed, {total['errored']} errored, "
          f"{total['lost']} lost, {total['stuck']} stuck; client retries {clients.retries if clients else 0}; "
          f"{time.monotonic() - t0:.0f}s")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and results else 1


def indent(text):
    return "\n".join("            " + line for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
