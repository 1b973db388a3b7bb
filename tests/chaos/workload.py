"""The chaos workload and its checks, shared by the compose and loopback modes.

One run: `volumes` volumes spread over cairn-1a, cairn-1b and the Outpost are
written over NBD (qemu-img through a gateway's NBD door) and snapshotted
(boto3) concurrently, in phases: write image k, CreateSnapshot tagged
`phase=k`, write image k+1 (a few blocks changed), and so on. A fault is
injected while that runs, then lifted. The checks, after the cluster settles:

- invariant 2: every snapshot of the run leaves `pending`; an `error` one
  carries a StateMessage;
- invariant 1: every `completed` snapshot restores (CreateVolume from it)
  byte for byte to the image written before its CreateSnapshot call, over
  the region the workload writes and a probe of the zero tail;
- invariant 4: every acknowledged record (volume, snapshot, tags) is still
  there, and every acknowledged NBD write is still on the live volume;
- the cluster serves again: a new volume can be created, described and
  deleted through every gateway;
- invariant 3 (lifecycle.py): garbage collection runs in a loop through every run while
  half the volumes delete each snapshot's parent as soon as the child is
  acknowledged (still pending); after a last GC pass, a re-replication pass
  finds no referenced chunk missing anywhere, except on a node whose disk
  the fault destroyed;
- invariant 5: reads verify (the restores above read whatever rot a fault
  put on a disk and must still be byte-equal); a scrub of every node then
  finds the rot, and once repair has run, every referenced chunk is back at
  its replication factor (a last pass finds nothing missing).

Clients fail over between gateways and retry through the fault: they see
errors, never wrong answers. A CreateSnapshot whose answer was lost may have
created a snapshot anyway; the `phase` tag ties every snapshot of a volume,
acknowledged or not, to the one image it must hold.
"""
import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lifecycle import check_lifecycle, gc_loop

#: How the StateMessage of a never-answered, never-frozen snapshot begins
#: (gateway/src/jobs/copy.rs, NEVER_FROZEN).
NEVER_FROZEN = "The snapshot was never taken"
BLOCK = 524288
GIB = 1 << 30
#: The workload writes only blocks below this index (16 MiB), so a restore is
#: checked by reading that region plus a probe of the zero tail.
REGION_BLOCKS = 32
#: Blocks of random data in the first image, and blocks rewritten per phase.
FIRST_BLOCKS = 6
CHANGED_BLOCKS = 3
#: How long one client operation keeps retrying through a fault.
OP_DEADLINE = float(os.environ.get("CHAOS_OP_DEADLINE", "180"))
#: How long snapshots may stay pending once the fault is lifted.
SETTLE_DEADLINE = float(os.environ.get("CHAOS_SETTLE_DEADLINE", "300"))

#: Error codes a client retries (possibly on the other gateway).
RETRYABLE = {
    "RequestLimitExceeded", "ServiceUnavailable", "Unavailable", "InternalError",
    "InternalFailure", "Throttling", "RequestTimeout", "IncorrectState",
}


@dataclass
class Gateway:
    name: str
    endpoint: str  # http://host:port
    nbd: str  # host:port


class VolumeLost(Exception):
    """The volume's host lost its disk (a fault did it): the live volume is
    gone, so its workload stops; its snapshots are still checked."""


class Clients:
    """boto3 clients for every gateway; calls fail over between them."""

    def __init__(self, gateways, region="cairn-1", credentials=None):
        self.gateways = gateways
        self.region = region
        #: (access key id, secret): the cluster's real pair, or any pair for a
        #: gateway in development mode.
        self.credentials = credentials or ("cairn", "cairn-dev-secret")
        self._local = threading.local()
        self.retries = 0
        self._lock = threading.Lock()
        #: Volumes whose only live copy a fault destroyed.
        self.lost_volumes = set()

    def client(self, i):
        cache = getattr(self._local, "clients", None)
        if cache is None:
            cache = self._local.clients = {}
        if i not in cache:
            session = boto3.session.Session()
            cache[i] = session.client(
                "ec2",
                endpoint_url=self.gateways[i].endpoint,
                region_name=self.region,
                aws_access_key_id=self.credentials[0],
                aws_secret_access_key=self.credentials[1],
                config=Config(retries={"max_attempts": 2, "mode": "standard"},
                              connect_timeout=3, read_timeout=30),
            )
        return cache[i]

    def count_retry(self):
        with self._lock:
            self.retries += 1

    def call(self, op, deadline=OP_DEADLINE, prefer=0, **kw):
        """Calls EC2 `op`, retrying on unavailability and rotating gateways,
        until it answers or `deadline` seconds pass (then the last error)."""
        end = time.monotonic() + deadline
        i = prefer % len(self.gateways)
        while True:
            try:
                return getattr(self.client(i), op)(**kw)
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code not in RETRYABLE and status < 500:
                    raise
                err = e
            except BotoCoreError as e:  # connection refused/reset, timeouts
                err = e
            self.count_retry()
            if kw.get("VolumeId") in self.lost_volumes:
                raise VolumeLost(kw["VolumeId"]) from err
            if time.monotonic() > end:
                raise err
            i = (i + 1) % len(self.gateways)
            time.sleep(0.5)

    def nbd_uris(self, volume):
        return [f"nbd://{g.nbd}/{volume}" for g in self.gateways]


def run_cmd(args, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def nbd_write(clients, volume, image, deadline=OP_DEADLINE, prefer=0):
    """Writes the image's non-zero blocks into the volume through a gateway's
    NBD door (qemu-img), failing over until it is acknowledged."""
    end = time.monotonic() + deadline
    uris = clients.nbd_uris(volume)
    i = prefer
    while True:
        r = run_cmd(["qemu-img", "convert", "-n", "--target-is-zero", "-f", "raw", "-O", "raw",
                     str(image), uris[i % len(uris)]])
        if r.returncode == 0:
            return
        clients.count_retry()
        if volume in clients.lost_volumes:
            raise VolumeLost(volume)
        if time.monotonic() > end:
            raise RuntimeError(f"qemu-img write to {volume} failed: {r.stderr.strip()}")
        i += 1
        time.sleep(1)


def region_opts(path_or_nbd, size):
    """qemu-img --image-opts for the first `size` bytes of a file or NBD export."""
    if path_or_nbd.startswith("nbd://"):
        hostport, export = path_or_nbd[len("nbd://"):].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        inner = f"file.driver=nbd,file.host={host},file.port={port},file.export={export}"
    else:
        inner = f"file.driver=file,file.filename={path_or_nbd}"
    return f"driver=raw,offset=0,size={size},{inner}"


def nbd_compare_region(clients, volume, image, deadline=120):
    """(ok, detail): the volume's first REGION_BLOCKS blocks equal the image's,
    and four random blocks of the zero tail read as zeros."""
    size = REGION_BLOCKS * BLOCK
    end = time.monotonic() + deadline
    i = 0
    while True:
        uri = clients.nbd_uris(volume)[i % len(clients.gateways)]
        r = run_cmd(["qemu-img", "compare", "--image-opts",
                     region_opts(str(image), size), region_opts(uri, size)])
        if r.returncode in (0, 1):
            if r.returncode == 1:
                return False, r.stdout.strip()
            tails = random.sample(range(REGION_BLOCKS, GIB // BLOCK), 4)
            hostport, export = uri[len("nbd://"):].split("/", 1)
            host, port = hostport.rsplit(":", 1)
            reads = []
            for b in tails:
                reads += ["-c", f"read -P 0 {b * BLOCK} {BLOCK}"]
            t = run_cmd(["qemu-io", "-r", "--image-opts",
                         f"driver=raw,file.driver=nbd,file.host={host},file.port={port},"
                         f"file.export={export}"] + reads)
            if "Pattern verification failed" in t.stdout:
                return False, f"a block of the zero tail ({tails}) is not zero: {t.stdout.strip()}"
            if t.returncode == 0:
                return True, ""
            r = t
        if time.monotonic() > end:
            return False, f"could not read {volume}: {r.stderr.strip()}"
        i += 1
        time.sleep(1)


@dataclass
class VolumePlan:
    """One volume of a run and what was written and snapshotted on it."""
    index: int
    zone: str
    outpost_arn: str | None
    images: list = field(default_factory=list)  # image path per phase
    volume_id: str | None = None
    acked_snapshots: dict = field(default_factory=dict)  # snapshot id -> phase
    deleted: set = field(default_factory=set)  # snapshot ids deleted by the workload
    written_phase: int = -1  # the last phase whose write was acknowledged
    error: str | None = None


def make_images(workdir, rng, phases):
    """Phase images: random blocks in the region; each phase rewrites a few
    blocks with new random bytes (never zeros, see `nbd_write`)."""
    paths = []
    blocks = {}
    for k in range(phases):
        chosen = rng.sample(range(REGION_BLOCKS), FIRST_BLOCKS if k == 0 else CHANGED_BLOCKS)
        for b in chosen:
            blocks[b] = rng.randbytes(BLOCK)
        path = os.path.join(workdir, f"phase{k}.img")
        with open(path, "wb") as f:
            f.truncate(GIB)
            for b, data in blocks.items():
                f.seek(b * BLOCK)
                f.write(data)
        paths.append(path)
    return paths


def tag_spec(resource, **kv):
    return [{"ResourceType": resource, "Tags": [{"Key": k, "Value": str(v)} for k, v in kv.items()]}]


def wait_volume(clients, volume, states=("available",), deadline=OP_DEADLINE):
    end = time.monotonic() + deadline
    while True:
        v = clients.call("describe_volumes", VolumeIds=[volume])["Volumes"][0]
        if v["State"] in states:
            return v
        if v["State"] == "error" or time.monotonic() > end:
            raise RuntimeError(f"{volume} is {v['State']}, wanted {states}")
        time.sleep(0.5)


def drive_volume(clients, plan, run_id, phases, started, prefer):
    """The client side of one volume: create it, then per phase write the
    image and CreateSnapshot. Errors end this volume's workload; the run
    reports them but checks what was acknowledged before."""
    try:
        token = f"{run_id}-{plan.index}"
        kw = dict(AvailabilityZone=plan.zone, Size=1, VolumeType="gp3", ClientToken=token,
                  TagSpecifications=tag_spec("volume", run=run_id, idx=plan.index))
        if plan.outpost_arn:
            kw["OutpostArn"] = plan.outpost_arn
        plan.volume_id = clients.call("create_volume", prefer=prefer, **kw)["VolumeId"]
        wait_volume(clients, plan.volume_id)
        for k in range(phases):
            nbd_write(clients, plan.volume_id, plan.images[k], prefer=prefer)
            plan.written_phase = k
            skw = dict(VolumeId=plan.volume_id, Description=f"chaos {run_id} phase {k}",
                       TagSpecifications=tag_spec("snapshot", run=run_id, phase=k,
                                                  vol=plan.volume_id))
            if plan.outpost_arn:
                skw["OutpostArn"] = plan.outpost_arn
            s = clients.call("create_snapshot", prefer=prefer, **skw)
            plan.acked_snapshots[s["SnapshotId"]] = k
            if k == 0:
                started.release()
            elif plan.index % 2 == 1:
                delete_parent(clients, plan, k - 1, prefer)
    except VolumeLost:
        pass  # the fault took the volume; what was acknowledged is still checked
    except Exception as e:  # reported per run; the checks still run
        plan.error = f"{type(e).__name__}: {e}"
    finally:
        if not plan.acked_snapshots:
            started.release()


def delete_parent(clients, plan, phase, prefer):
    """Deletes the snapshot of `phase` while its child (the next phase's,
    just acknowledged) is most likely still pending: the child must still
    complete and restore byte for byte (invariant 3). A retried delete whose
    first answer was lost finds the snapshot gone, which is what it asked."""
    for sid, p in list(plan.acked_snapshots.items()):
        if p != phase:
            continue
        try:
            clients.call("delete_snapshot", prefer=prefer, SnapshotId=sid)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "InvalidSnapshot.NotFound":
                raise
        del plan.acked_snapshots[sid]
        plan.deleted.add(sid)


@dataclass
class RunResult:
    fault: str
    completed: int = 0
    errored: int = 0
    lost: int = 0
    stuck: int = 0
    failures: list = field(default_factory=list)
    #: StateMessage of each errored snapshot -> how many.
    messages: dict = field(default_factory=dict)
    #: What the lifecycle checks saw, for the log.
    notes: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self):
        return not self.failures and self.lost == 0 and self.stuck == 0


def describe_run_snapshots(clients, run_id):
    snaps = {}
    token = None
    while True:
        kw = dict(Filters=[{"Name": "tag:run", "Values": [run_id]}], MaxResults=200)
        if token:
            kw["NextToken"] = token
        r = clients.call("describe_snapshots", **kw)
        for s in r["Snapshots"]:
            snaps[s["SnapshotId"]] = s
        token = r.get("NextToken")
        if not token:
            return snaps


def settle(clients, run_id, deadline=SETTLE_DEADLINE):
    """Waits until no snapshot of the run is pending; returns them all."""
    end = time.monotonic() + deadline
    while True:
        snaps = describe_run_snapshots(clients, run_id)
        if all(s["State"] != "pending" for s in snaps.values()) or time.monotonic() > end:
            return snaps
        time.sleep(1)


def check_snapshot(clients, plan, snap, phase, result, lock):
    """Invariants 1 and 2 for one snapshot; restores a completed one."""
    sid = snap["SnapshotId"]
    state = snap["State"]
    if state == "pending":
        with lock:
            result.stuck += 1
            result.failures.append(f"inv2: {sid} ({plan.volume_id} phase {phase}) still pending "
                                   f"at {snap.get('Progress')}")
        return
    if state == "error":
        with lock:
            result.errored += 1
            msg = snap.get("StateMessage", "")
            result.messages[msg] = result.messages.get(msg, 0) + 1
            if not msg:
                result.failures.append(f"inv2: {sid} is error without a StateMessage")
        return
    if state != "completed":
        with lock:
            result.failures.append(f"{sid}: unexpected state {state}")
        return
    restored = None
    try:
        zone = plan.zone if plan.outpost_arn else ("cairn-1b" if plan.zone == "cairn-1a"
                                                   else "cairn-1a")
        kw = dict(AvailabilityZone=zone, SnapshotId=sid, VolumeType="gp3",
                  ClientToken=f"restore-{sid}")
        if plan.outpost_arn:
            kw["OutpostArn"] = plan.outpost_arn
        restored = clients.call("create_volume", **kw)["VolumeId"]
        wait_volume(clients, restored)
        ok, detail = nbd_compare_region(clients, restored, plan.images[phase])
        with lock:
            result.completed += 1
            if not ok:
                result.failures.append(f"inv1: {sid} ({plan.volume_id} phase {phase}) restored "
                                       f"as {restored} differs: {detail}")
    except Exception as e:
        with lock:
            result.completed += 1
            result.failures.append(f"restore of {sid}: {type(e).__name__}: {e}")
    finally:
        if restored:
            try:
                clients.call("delete_volume", VolumeId=restored, deadline=60)
            except Exception:
                pass  # cleanup only; a leftover volume changes no verdict


def check_run(clients, plans, run_id, result):
    snaps = settle(clients, run_id)
    lock = threading.Lock()
    jobs = []
    for plan in plans:
        if plan.error and plan.volume_id not in clients.lost_volumes:
            result.failures.append(f"workload {plan.volume_id or plan.index}: {plan.error}")
        if plan.volume_id is None:
            continue
        # Invariant 4: acknowledged records are there, exactly as acknowledged.
        try:
            v = clients.call("describe_volumes", VolumeIds=[plan.volume_id])["Volumes"][0]
            tags = {t["Key"]: t["Value"] for t in v.get("Tags", [])}
            if tags.get("run") != run_id:
                result.failures.append(f"inv4: {plan.volume_id} lost its tags: {tags}")
        except ClientError as e:
            result.lost += 1
            result.failures.append(f"inv4: acknowledged volume {plan.volume_id} is gone: {e}")
            continue
        for sid, phase in plan.acked_snapshots.items():
            if sid in snaps or sid in plan.deleted:
                continue
            try:
                found = clients.call("describe_snapshots", SnapshotIds=[sid])["Snapshots"]
            except ClientError:
                found = []
            result.lost += 1
            if found:
                result.failures.append(f"inv4: acknowledged snapshot {sid} lost its tags: "
                                       f"{found[0].get('Tags')}")
            else:
                result.failures.append(f"inv4: acknowledged snapshot {sid} is gone")
        mine = {sid: s for sid, s in snaps.items()
                if any(t["Key"] == "vol" and t["Value"] == plan.volume_id
                       for t in s.get("Tags", []))}
        for sid, s in mine.items():
            phase = next(int(t["Value"]) for t in s["Tags"] if t["Key"] == "phase")
            if s.get("VolumeId") != plan.volume_id:
                result.failures.append(f"inv4: {sid} names volume {s.get('VolumeId')}")
            # Only a CreateSnapshot that was never answered may say it was never
            # frozen: an answered one had its volume frozen first.
            if sid in plan.acked_snapshots and \
                    s.get("StateMessage", "").startswith(NEVER_FROZEN):
                result.failures.append(f"inv1: acknowledged snapshot {sid} was never frozen")
            jobs.append((plan, s, phase))
    with ThreadPoolExecutor(max_workers=8) as pool:
        for plan, s, phase in jobs:
            pool.submit(check_snapshot, clients, plan, s, phase, result, lock)
        # Invariant 4 for bytes: every acknowledged NBD write is on the live volume.
        for plan in plans:
            lost = plan.volume_id in clients.lost_volumes
            if plan.volume_id and plan.written_phase >= 0 and not lost:
                pool.submit(check_live, clients, plan, result, lock)


def check_live(clients, plan, result, lock):
    ok, detail = nbd_compare_region(clients, plan.volume_id, plan.images[plan.written_phase])
    if not ok:
        with lock:
            result.lost += 1
            result.failures.append(f"inv4: live volume {plan.volume_id} lost acknowledged "
                                   f"writes of phase {plan.written_phase}: {detail}")


def serves_again(clients):
    """Every gateway creates, describes and deletes a volume."""
    problems = []
    for i, g in enumerate(clients.gateways):
        try:
            v = clients.client(i).create_volume(AvailabilityZone="cairn-1a", Size=1,
                                                 ClientToken=str(uuid.uuid4()))["VolumeId"]
            wait_volume(clients, v, deadline=60)
            clients.client(i).delete_volume(VolumeId=v)
        except Exception as e:
            problems.append(f"{g.name} does not serve: {type(e).__name__}: {e}")
    return problems


def cleanup(clients, plans):
    for plan in plans:
        if plan.volume_id:
            try:
                clients.call("delete_volume", VolumeId=plan.volume_id, deadline=60)
            except Exception:
                pass  # best effort: volumes of a finished run only take space


def run_once(clients, fault, *, volumes, phases, outpost_arn, workdir, seed):
    """One chaos run: the workload; `fault.inject()` once about half the
    volumes have a snapshot in flight; `fault.lift()` after `fault.hold`
    seconds, while clients still retry; then, once the workload ends, the
    checks."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    run_id = f"r{seed}-{uuid.uuid4().hex[:6]}"
    result = RunResult(fault=fault.name)
    zones = ["cairn-1a", "cairn-1b", "outpost"]
    plans = []
    for i in range(volumes):
        z = zones[i % 3] if outpost_arn else zones[i % 2]
        d = os.path.join(workdir, run_id, f"v{i}")
        os.makedirs(d, exist_ok=True)
        plans.append(VolumePlan(index=i, zone="cairn-1a" if z == "outpost" else z,
                                outpost_arn=outpost_arn if z == "outpost" else None,
                                images=make_images(d, rng, phases)))
    started = threading.Semaphore(0)
    stop_gc = threading.Event()
    collector = threading.Thread(target=gc_loop, args=(clients, stop_gc), daemon=True)
    collector.start()
    try:
        with ThreadPoolExecutor(max_workers=volumes) as pool:
            futs = [pool.submit(drive_volume, clients, p, run_id, phases, started,
                                i % len(clients.gateways))
                    for i, p in enumerate(plans)]
            for _ in range(max(1, volumes // 2)):
                started.acquire(timeout=OP_DEADLINE)
            try:
                detail = fault.inject(rng)
                clients.lost_volumes.update(fault.lost_volumes)
                time.sleep(fault.hold)
            finally:
                fault.lift()
            for f in futs:
                f.result()
        result.fault = f"{fault.name} ({detail})" if detail else fault.name
        fault.wait_healthy()
        check_run(clients, plans, run_id, result)
    finally:
        # An aborted run must not leave its collector asking for passes.
        stop_gc.set()
        collector.join()
    check_lifecycle(clients, fault, result)
    result.failures.extend(serves_again(clients))
    cleanup(clients, plans)
    shutil.rmtree(os.path.join(workdir, run_id), ignore_errors=True)
    result.seconds = time.monotonic() - t0
    return result
