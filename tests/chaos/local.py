"""The chaos cluster without Docker: the `cairn` binary's processes on
loopback (3 metadata nodes, 6 chunk nodes, 2 gateways), and the faults one
host can inject into processes: SIGKILL, SIGSTOP/SIGCONT, restart of all.

Every listener first binds port 0; the process writes what it bound to its
address file, and a restart binds the same ports again (Raft stores the
metadata members' addresses, chunk nodes register theirs).
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import disk
from compose import Fault
from lifecycle import corrupt_found, hosted_volumes
from workload import Gateway

BIN = os.environ.get("CAIRN_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/cairn-target")) / "debug/cairn")
OUTPOST_ID = "op-0c0ffee0000ca1b5e"
OUTPOST_ARN = f"arn:aws:outposts:cairn-1:123456789012:outpost/{OUTPOST_ID}"
CHUNKS = [("chunk-1a-1", "cairn-1a", False), ("chunk-1a-2", "cairn-1a", False),
          ("chunk-1b-1", "cairn-1b", False), ("chunk-1b-2", "cairn-1b", False),
          ("chunk-op-1", "cairn-1a", True), ("chunk-op-2", "cairn-1a", True)]


def toml_list(items):
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


class Proc:
    """One `cairn` process; restarts on the ports it first bound."""

    def __init__(self, kind, name, d, config, nbd):
        self.kind, self.name, self.dir = kind, name, Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.toml").write_text(config)
        self.listen = "127.0.0.1:0"
        self.nbd_listen = "127.0.0.1:0" if nbd else None
        self.proc = None
        self.main = None
        self.nbd = None

    def launch(self):
        addr = self.dir / "addr.toml"
        addr.unlink(missing_ok=True)
        args = [BIN, self.kind, "--config", str(self.dir / "config.toml"),
                "--listen", self.listen, "--addr-file", str(addr)]
        if self.nbd_listen:
            args += ["--nbd-listen", self.nbd_listen]
        log = open(self.dir / "log", "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

    def wait_ready(self, deadline=60):
        end = time.monotonic() + deadline
        addr = self.dir / "addr.toml"
        while not addr.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.logs(15)}")
            if time.monotonic() > end:
                raise RuntimeError(f"{self.name} did not start:\n{self.logs(15)}")
            time.sleep(0.05)
        a = tomllib.loads(addr.read_text())
        self.main, self.nbd = a["main"], a.get("nbd")
        self.listen = self.main
        if self.nbd:
            self.nbd_listen = self.nbd

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self, tail=30):
        try:
            lines = (self.dir / "log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-tail:])


class LocalCluster:
    def __init__(self):
        self.tmp = None
        self.procs = {}
        self.gateways = []
        self.outpost_arn = OUTPOST_ARN
        self.meta_addrs = []

    def up(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cairn-chaos-local-")
        root = Path(self.tmp.name)
        for i in (1, 2, 3):
            d = root / f"meta-{i}"
            self.procs[f"meta-{i}"] = Proc(
                "metadata-node", f"meta-{i}", d,
                f'node_id = {i}\ndata_dir = "{d / "raft"}"\n', nbd=False)
        self._start([f"meta-{i}" for i in (1, 2, 3)])
        self.meta_addrs = [f"http://{self.procs[f'meta-{i}'].main}" for i in (1, 2, 3)]
        r = subprocess.run([BIN, "init-cluster", "--metadata", ",".join(self.meta_addrs)],
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError(f"init-cluster failed: {r.stderr.strip()}")
        ml = toml_list(self.meta_addrs)
        for name, az, op in CHUNKS:
            d = root / name
            cfg = (f'node_id = "{name}"\naz = "{az}"\ndata_dir = "{d / "data"}"\n'
                   f'metadata = {ml}\nadvertise_host = "127.0.0.1"\n')
            if op:
                cfg += f'outpost = "{OUTPOST_ID}"\n'
            self.procs[name] = Proc("chunk-node", name, d, cfg, nbd=True)
        for g in ("gateway-1", "gateway-2"):
            # As deploy/config/gateway-N.toml: short leases and host timeout.
            gw_cfg = ('region = "cairn-1"\naccount_id = "123456789012"\n'
                      f'availability_zones = ["cairn-1a", "cairn-1b"]\nmetadata = {ml}\n'
                      f'replication_factor = 3\ngateway_id = "{g}"\njob_lease_ms = 10000\n'
                      'job_scan_ms = 1000\ncopy_host_timeout_secs = 15\ncopy_idle_secs = 10\n')
            self.procs[g] = Proc("gateway", g, root / g, gw_cfg, nbd=True)
        self._start([c[0] for c in CHUNKS] + ["gateway-1", "gateway-2"])
        self.gateways = [Gateway(g, f"http://{self.procs[g].main}", self.procs[g].nbd)
                         for g in ("gateway-1", "gateway-2")]
        self.wait_healthy()

    def _start(self, names):
        for n in names:
            self.procs[n].launch()
        for n in names:
            self.procs[n].wait_ready()

    def down(self):
        for p in reversed(list(self.procs.values())):
            p.stop()
        if self.tmp:
            self.tmp.cleanup()

    def logs(self, name, tail=40):
        return self.procs[name].logs(tail)

    def leader(self):
        r = subprocess.run([BIN, "admin", "status", "--metadata", ",".join(self.meta_addrs)],
                           capture_output=True, text=True, timeout=30)
        for line in r.stdout.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 5 and cols[2].lower() == "leader" and cols[0] == cols[4]:
                return f"meta-{cols[0]}"
        return None

    def wait_healthy(self, deadline=180):
        end = time.monotonic() + deadline
        while True:
            for p in self.procs.values():
                p.signal(signal.SIGCONT)
                if not p.alive():
                    p.launch()
                    p.wait_ready()
            healthy = all(_status(g.endpoint + "/_cairn/health") == 200 for g in self.gateways)
            if healthy and self.leader() is not None:
                return
            if time.monotonic() > end:
                raise RuntimeError("the cluster did not become healthy")
            time.sleep(0.5)


def _status(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status
    except Exception:
        return None


def _kill(f, names):
    f.hit = names
    for n in names:
        f.cluster.procs[n].kill()
    return "+".join(names)


def _restart_hit(f):
    f.cluster._start(f.hit)


def _pause(f, rng):
    node = rng.choice([c[0] for c in CHUNKS[:4]])
    f.hit = [node]
    f.cluster.procs[node].signal(signal.SIGSTOP)
    return f"SIGSTOP {node} for {f.hold:.0f}s"


def _resume(f):
    for n in f.hit:
        f.cluster.procs[n].signal(signal.SIGCONT)


def _lose_disk(f, rng):
    """A regional chunk node dies with its disk: SIGKILLed, its data
    directory deleted; `lift` starts it again, empty, on the same ports."""
    node = rng.choice([c[0] for c in CHUNKS[:4]])
    f.hit, f.lost_nodes = [node], [node]
    p = f.cluster.procs[node]
    p.kill()
    f.lost_volumes = hosted_volumes(f.cluster.gateways[0], node)
    shutil.rmtree(p.dir / "data", ignore_errors=True)
    return f"{node} and its {len(f.lost_volumes)} volume(s)"


def _flip_bytes(f, rng):
    """Rot in a regional chunk node's pack files, under the running node."""
    node = rng.choice([c[0] for c in CHUNKS[:4]])
    f.flipped = (node, corrupt_found(f.cluster.gateways[0], node))
    hit = disk.flip_until(f.cluster.procs[node].dir / "data" / "packs", rng, 8)
    return f"{len(hit)} records on {node}"


def faults(cluster, pause_secs):
    """The loopback fault cycle: the compose cycle without the network cut."""
    return [
        Fault(cluster, "kill-metadata-leader", 5,
              lambda f, rng: _kill(f, [f.cluster.leader() or "meta-1"]), _restart_hit),
        Fault(cluster, "kill-chunk-node", 10,
              lambda f, rng: _kill(f, [rng.choice([c[0] for c in CHUNKS])]), _restart_hit),
        Fault(cluster, "kill-gateway", 10, lambda f, rng: _kill(f, ["gateway-1"]), _restart_hit),
        Fault(cluster, "pause-volume-host", pause_secs, _pause, _resume),
        Fault(cluster, "lose-chunk-node-disk", 5, _lose_disk, _restart_hit),
        Fault(cluster, "flip-bytes-on-disk", 3, _flip_bytes, lambda f: None),
        Fault(cluster, "restart-all", 3,
              lambda f, rng: _kill(f, list(f.cluster.procs)) and "SIGKILL of all 11",
              _restart_hit),
    ]
