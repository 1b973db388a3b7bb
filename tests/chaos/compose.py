"""The docker-compose cluster of deploy/ and the faults injected into it."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import disk
from lifecycle import corrupt_found, hosted_volumes
from workload import Gateway

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
#: CHAOS_CAPACITY=1: the capacity-tier variant (chunk nodes keep sealed packs
#: in the bucket of a local S3 server), deploy/docker-compose.capacity.yml.
CAPACITY_FILE = ROOT / "deploy" / "docker-compose.capacity.yml"
COMPOSE_FILES = [COMPOSE_FILE] + ([CAPACITY_FILE] if os.environ.get("CHAOS_CAPACITY") == "1" else [])
PROJECT = os.environ.get("CHAOS_PROJECT", "cairn-chaos")
META = ["meta-1", "meta-2", "meta-3"]
CHUNKS = ["chunk-1a-1", "chunk-1a-2", "chunk-1b-1", "chunk-1b-2", "chunk-op-1", "chunk-op-2"]
REGIONAL_CHUNKS = CHUNKS[:4]
OUTPOST_CHUNKS = CHUNKS[4:]
GATEWAYS = ["gateway-1", "gateway-2"]
SERVICES = META + CHUNKS + GATEWAYS
META_ADDRS = ",".join(f"http://{m}:7000" for m in META)
#: The Outpost of deploy/config/chunk-op-*.toml.
OUTPOST_ID = "op-0c0ffee0000ca1b5e"
OUTPOST_ARN = f"arn:aws:outposts:cairn-1:123456789012:outpost/{OUTPOST_ID}"
#: Host ports the suite publishes the gateways on (not the defaults, so a
#: cluster a developer runs on 8773 is left alone).
PORTS = {
    "CAIRN_HTTP_PORT": os.environ.get("CHAOS_HTTP_PORT", "18773"),
    "CAIRN_NBD_PORT": os.environ.get("CHAOS_NBD_PORT", "20809"),
    "CAIRN_HTTP_PORT_2": os.environ.get("CHAOS_HTTP_PORT_2", "18774"),
    "CAIRN_NBD_PORT_2": os.environ.get("CHAOS_NBD_PORT_2", "20810"),
}


def compose_cmd():
    """`docker compose` (v2 plugin) if it works, else `docker-compose` (v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("neither `docker compose` nor `docker-compose` is installed")


def sh(args, check=True, timeout=300):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status
    except Exception:
        return None


class ComposeCluster:
    def __init__(self):
        files = [arg for f in COMPOSE_FILES for arg in ("-f", str(f))]
        self.compose = compose_cmd() + files + ["-p", PROJECT]
        self.env = dict(os.environ, **PORTS)
        self.ids = {}
        self.network = None
        self.gateways = [
            Gateway("gateway-1", f"http://127.0.0.1:{PORTS['CAIRN_HTTP_PORT']}",
                    f"127.0.0.1:{PORTS['CAIRN_NBD_PORT']}"),
            Gateway("gateway-2", f"http://127.0.0.1:{PORTS['CAIRN_HTTP_PORT_2']}",
                    f"127.0.0.1:{PORTS['CAIRN_NBD_PORT_2']}"),
        ]
        self.outpost_arn = OUTPOST_ARN
        #: The first account's key pair, made by the init service.
        self.credentials = None

    def dc(self, *args, check=True, timeout=600):
        r = subprocess.run(self.compose + list(args), capture_output=True, text=True,
                           timeout=timeout, env=self.env)
        if check and r.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)} failed: {r.stderr.strip()[-2000:]}")
        return r

    def up(self):
        """A fresh cluster: old containers and volumes of the project removed."""
        self.dc("down", "-v", "--remove-orphans", check=False)
        self.dc("up", "-d")
        for s in SERVICES + ["init"]:
            self.ids[s] = self.dc("ps", "-q", s).stdout.strip()
            if not self.ids[s]:
                raise RuntimeError(f"service {s} has no container")
        nets = json.loads(sh(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                              self.ids["meta-1"]]).stdout)
        self.network = next(iter(nets))
        code = sh(["docker", "wait", self.ids["init"]], timeout=180).stdout.strip()
        if code != "0":
            raise RuntimeError(f"init-cluster exited with {code}:\n{self.logs('init')}")
        self.credentials = self.read_credentials()
        self.wait_healthy()

    def read_credentials(self):
        """The key pair init wrote to the secrets volume (copied out of its
        stopped container)."""
        with tempfile.TemporaryDirectory() as d:
            sh(["docker", "cp", f"{self.ids['init']}:/secrets/credentials", d + "/credentials"])
            c = tomllib.loads(Path(d, "credentials").read_text())
        return c["access_key_id"], c["secret_access_key"]

    def down(self):
        self.dc("down", "-v", "--remove-orphans", check=False)

    def capacity_report(self):
        """With the capacity-tier variant: the packs each chunk node holds in
        the bucket, from its metrics (read over the compose network); None
        without it."""
        if CAPACITY_FILE not in COMPOSE_FILES:
            return None
        packs = {}
        for s in CHUNKS:
            ip = sh(["docker", "inspect", "-f",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                     self.ids[s]]).stdout.strip()
            with urllib.request.urlopen(f"http://{ip}:9100/metrics", timeout=5) as r:
                text = r.read().decode()
            m = re.search(r"^cairn_chunk_tier_packs (\d+)", text, re.M)
            packs[s] = int(m.group(1)) if m else 0
        return packs

    def logs(self, service, tail=40):
        r = sh(["docker", "logs", "--tail", str(tail), self.ids.get(service, service)], check=False)
        return (r.stdout + r.stderr).strip()

    def running(self, service):
        r = sh(["docker", "inspect", "-f", "{{.State.Status}}", self.ids[service]], check=False)
        return r.stdout.strip()

    def wait_healthy(self, deadline=180):
        """Every container runs (a stopped one is started again), every
        gateway answers its health check, and the metadata group has a leader."""
        end = time.monotonic() + deadline
        while True:
            for s in SERVICES:
                st = self.running(s)
                if st == "paused":
                    sh(["docker", "unpause", self.ids[s]], check=False)
                elif st in ("exited", "created", "dead"):
                    sh(["docker", "start", self.ids[s]], check=False)
            if all(http_status(g.endpoint + "/_cairn/health") == 200 for g in self.gateways) \
                    and self.leader() is not None:
                return
            if time.monotonic() > end:
                raise RuntimeError("the cluster did not become healthy:\n" + "\n".join(
                    f"--- {s} ({self.running(s)})\n{self.logs(s, 10)}" for s in SERVICES))
            time.sleep(1)

    def leader(self):
        """The metadata service that leads, asked through `cairn admin status`
        inside a running member's container."""
        for m in META:
            if self.running(m) != "running":
                continue
            r = sh(["docker", "exec", self.ids[m], "cairn", "admin", "status",
                    "--metadata", META_ADDRS, "--tls-dir", "/tls/admin"], check=False, timeout=30)
            for line in r.stdout.splitlines()[1:]:
                cols = line.split()
                if len(cols) >= 5 and cols[2].lower() == "leader" and cols[0] == cols[4]:
                    return f"meta-{cols[0]}"
        return None

    def kill(self, service):
        sh(["docker", "kill", self.ids[service]])

    def start(self, service):
        sh(["docker", "start", self.ids[service]])


class Fault:
    """One fault: `inject` starts it (returns what it hit), `lift` ends it."""

    def __init__(self, cluster, name, hold, inject, lift):
        self.cluster = cluster
        self.name = name
        self.hold = hold
        self._inject = inject
        self._lift = lift
        self.hit = []
        #: Nodes whose disk the fault destroyed, and the volumes they hosted.
        self.lost_nodes = []
        self.lost_volumes = []
        #: (node, corrupt records it had found before) when bytes were flipped.
        self.flipped = None

    def inject(self, rng):
        self.hit, self.lost_nodes, self.lost_volumes, self.flipped = [], [], [], None
        return self._inject(self, rng)

    def lift(self):
        self._lift(self)

    def wait_healthy(self):
        self.cluster.wait_healthy()


def _kill_leader(f, rng):
    leader = f.cluster.leader() or "meta-1"
    f.hit = [leader]
    f.cluster.kill(leader)
    return leader


def _kill_chunk(f, rng):
    node = rng.choice(CHUNKS)
    f.hit = [node]
    f.cluster.kill(node)
    return node


def _kill_gateway(f, rng):
    f.hit = ["gateway-1"]
    f.cluster.kill("gateway-1")
    return "gateway-1"


def _start_hit(f):
    for s in f.hit:
        f.cluster.start(s)


def _pause_host(f, rng):
    node = rng.choice(REGIONAL_CHUNKS)
    f.hit = [node]
    sh(["docker", "pause", f.cluster.ids[node]])
    return f"{node} for {f.hold:.0f}s"


def _unpause(f):
    for s in f.hit:
        sh(["docker", "unpause", f.cluster.ids[s]])


def _cut_outpost(f, rng):
    f.hit = OUTPOST_CHUNKS
    for s in f.hit:
        sh(["docker", "network", "disconnect", f.cluster.network, f.cluster.ids[s]])
    return "+".join(f.hit)


def _reconnect(f):
    for s in f.hit:
        # The service name is an alias on the network; a reconnect must restore it.
        sh(["docker", "network", "connect", "--alias", s, f.cluster.network, f.cluster.ids[s]])


def _data_dir(f, service):
    """The host directory of the service's /data volume."""
    fmt = '{{range .Mounts}}{{if eq .Destination "/data"}}{{.Source}}{{end}}{{end}}'
    path = Path(sh(["docker", "inspect", "-f", fmt, f.cluster.ids[service]]).stdout.strip())
    if not os.access(path, os.W_OK):
        raise RuntimeError(f"the disk faults change {service}'s volume at {path} on the Docker "
                           "host, which this user cannot write: run the suite as root (as CI "
                           "does), or leave these faults out with CHAOS_FAULTS")
    return path


def _lose_disk(f, rng):
    """A regional chunk node dies with its disk: killed, its data volume
    emptied; `lift` starts it again, empty, as a replaced disk would."""
    node = rng.choice(REGIONAL_CHUNKS)
    f.hit, f.lost_nodes = [node], [node]
    f.cluster.kill(node)
    f.lost_volumes = hosted_volumes(f.cluster.gateways[0], node)
    data = _data_dir(f, node)
    for child in data.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    return f"{node} and its {len(f.lost_volumes)} volume(s)"


def _flip_bytes(f, rng):
    """Rot in a regional chunk node's pack files, under the running node."""
    node = rng.choice(REGIONAL_CHUNKS)
    f.flipped = (node, corrupt_found(f.cluster.gateways[0], node))
    capacity = os.environ.get("CHAOS_CAPACITY") == "1"
    packs = _data_dir(f, node) / "chunks" / "packs"
    hit = disk.flip_until(packs, rng, 8, open_only=capacity)
    return f"{len(hit)} records on {node}"


def _nothing(f):
    pass


def _kill_all(f, rng):
    f.hit = SERVICES
    sh(["docker", "kill"] + [f.cluster.ids[s] for s in SERVICES])
    return "SIGKILL of all 11"


def _start_all(f):
    sh(["docker", "start"] + [f.cluster.ids[s] for s in META + CHUNKS + GATEWAYS])


def faults(cluster, pause_secs):
    """The compose fault cycle, in order."""
    return [
        Fault(cluster, "kill-metadata-leader", 5, _kill_leader, _start_hit),
        Fault(cluster, "kill-chunk-node", 10, _kill_chunk, _start_hit),
        Fault(cluster, "kill-gateway", 10, _kill_gateway, _start_hit),
        Fault(cluster, "pause-volume-host", pause_secs, _pause_host, _unpause),
        Fault(cluster, "cut-outpost", 15, _cut_outpost, _reconnect),
        Fault(cluster, "lose-chunk-node-disk", 5, _lose_disk, _start_hit),
        Fault(cluster, "flip-bytes-on-disk", 3, _flip_bytes, _nothing),
        Fault(cluster, "restart-all", 3, _kill_all, _start_all),
    ]
