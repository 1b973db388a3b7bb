"""A restic repository of a given shape, built fast, to compare `restic prune`
with Cairn's garbage collector.

`make_repo` backs up BLOBS small files of unique content with REAL_BACKUPS
real `restic backup` runs (one per top-level directory), then forges
snapshots, written the way restic writes them (see restic's doc/design.rst:
"Keys, Encryption and MAC", "Unpacked Data Format", "Snapshots"), until the
repository holds SNAPSHOTS of them. A forged snapshot is a copy of a real
one's JSON with another time: it references the same tree, so prune loads
and parses one more snapshot file and walks no new tree (restic walks a tree
once however many snapshots share it, as unchanged trees of successive real
backups are), without a backup run per snapshot, which at 10,000 snapshots
would take hours. `forget_and_prune` then forgets every snapshot of the first
fraction of the trees, which leaves that fraction of the data blobs
unreferenced, and times `restic prune --max-unused 0`.

restic is the Debian package (`apt-get install restic`; /usr/bin/time comes
from the `time` package); forging needs the `cryptography` package in the
virtualenv. Not a test: the figures vary
with the machine.
"""
import base64
import hashlib
import json
import math
import os
import re
import subprocess
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

# One file is one data blob: restic's chunker cuts nothing below its 512 KiB
# minimum, so a smaller file is stored whole as a single blob. 4 KiB keeps
# 1,000,000 blobs at about 4 GiB of source and as much again of packs.
BLOB_BYTES = 4096
# Files a directory: a tree blob, and a directory listing, stay small.
FILES_PER_DIR = 1000
# Snapshot IDs one `restic forget` is given: about 32 KiB of arguments.
FORGET_BATCH = 500
# Up to this many blobs, `make_repo` runs `restic check` by default.
CHECK_MAX_BLOBS = 50_000
# restic runs alone in the benchmark (Cairn's processes are stopped by then),
# at the same priority as Cairn's: no `nice`.


def restic_env(repo_dir, password):
    """The environment of a restic run on REPO_DIR: only our repository and
    password, no RESTIC_* setting inherited from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env.update(RESTIC_REPOSITORY=str(repo_dir), RESTIC_PASSWORD=password)
    return env


def restic(args, env):
    """Runs `restic ARGS` and returns its stdout; a failure raises with
    restic's stderr in the message."""
    p = subprocess.run(["restic", *args], env=env, text=True, capture_output=True)
    if p.returncode != 0:
        raise RuntimeError(f"restic {' '.join(args[:3])} ... failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p.stdout


def du(path):
    """Bytes the files under PATH take on the disk (allocated blocks, as
    `du`, and as the benchmark counts Cairn's)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


# --- restic's encryption: AES-256-CTR, then Poly1305-AES over the ciphertext.

def _mac(k, r, iv, ciphertext):
    """Poly1305-AES: Poly1305 with key r and s = AES-128_k(IV) (restic's
    poly1305PrepareKey; Poly1305 clamps r itself)."""
    enc = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
    s = enc.update(iv) + enc.finalize()
    return Poly1305.generate_tag(r + s, ciphertext)


def _open(key, blob):
    """Authenticates and decrypts BLOB = IV || ciphertext || MAC with KEY
    (encrypt, mac_k, mac_r); raises ValueError if the MAC does not match."""
    enc_key, k, r = key
    iv, ct, tag = blob[:16], blob[16:-16], blob[-16:]
    if _mac(k, r, iv, ct) != tag:
        raise ValueError("MAC mismatch (wrong password or key?)")
    d = Cipher(algorithms.AES(enc_key), modes.CTR(iv)).decryptor()
    return d.update(ct) + d.finalize()


def _seal(key, plaintext):
    """IV || AES-256-CTR ciphertext || Poly1305-AES MAC, with a fresh random
    IV, as restic's Key.Seal (the IV is both counter block and MAC nonce)."""
    enc_key, k, r = key
    iv = os.urandom(16)
    e = Cipher(algorithms.AES(enc_key), modes.CTR(iv)).encryptor()
    ct = e.update(plaintext) + e.finalize()
    return iv + ct + _mac(k, r, iv, ct)


def master_key(repo_dir, password):
    """The repository's master key (encrypt, mac k, mac r), from a key file in
    keys/: scrypt(password, salt, N, r, p) gives 64 bytes, 32 of AES key then
    16 of MAC k and 16 of MAC r, which open the file's `data`, the master key
    as JSON."""
    for kf in sorted(Path(repo_dir, "keys").iterdir()):
        doc = json.loads(kf.read_bytes())
        if doc.get("kdf") != "scrypt":
            continue
        n, r, p = doc["N"], doc["r"], doc["p"]
        derived = hashlib.scrypt(password.encode(), salt=base64.b64decode(doc["salt"]),
                                 n=n, r=r, p=p, dklen=64, maxmem=256 * r * (n + p + 2) + (1 << 20))
        user_key = (derived[:32], derived[32:48], derived[48:64])
        try:
            mk = json.loads(_open(user_key, base64.b64decode(doc["data"])))
        except ValueError:
            continue  # another password's key file
        return (base64.b64decode(mk["encrypt"]), base64.b64decode(mk["mac"]["k"]),
                base64.b64decode(mk["mac"]["r"]))
    raise ValueError(f"no key file in {repo_dir}/keys opens with this password")


def save_unpacked(repo_dir, kind, key, plaintext):
    """Stores PLAINTEXT encrypted as restic's local backend stores a file of
    type KIND (snapshots, ...): under its storage ID, the SHA-256 of the whole
    stored file, written to a temporary name in the same directory, renamed,
    then made read-only. Not fsynced one by one (the caller syncs once).
    Returns the ID."""
    blob = _seal(key, plaintext)
    sid = hashlib.sha256(blob).hexdigest()
    d = Path(repo_dir, kind)
    tmp = d / f"{sid}-tmp-forge"
    with open(tmp, "xb") as f:
        f.write(blob)
    final = d / sid
    os.rename(tmp, final)
    os.chmod(final, 0o400)
    return sid


def _go_time(t):
    """T as Go's encoding/json writes a time.Time (RFC 3339, fraction without
    trailing zeros, Z for UTC)."""
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        s += f".{t.microsecond:06d}".rstrip("0")
    off = t.utcoffset()
    if not off:
        return s + "Z"
    mins = int(off.total_seconds()) // 60
    sign = "+" if mins >= 0 else "-"
    return s + f"{sign}{abs(mins) // 60:02d}:{abs(mins) % 60:02d}"


def _parse_go_time(s):
    """A time as restic stores it (nanoseconds, Z or an offset) in Python."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        raise ValueError(f"unexpected snapshot time {s!r}")
    base, frac, tz = m.groups()
    t = datetime.fromisoformat(base + ("+00:00" if tz == "Z" else tz))
    return t.replace(microsecond=int((frac or "0")[:6].ljust(6, "0")))


def make_files(src_dir, blobs, real_backups, blob_bytes=BLOB_BYTES):
    """Writes BLOBS files of BLOB_BYTES random bytes each (so unique, and one
    data blob each) under SRC_DIR/bNNNN/sNNNN/fNNNN, REAL_BACKUPS top-level
    directories of FILES_PER_DIR files a subdirectory. Returns the top-level
    directories."""
    tops = []
    per = [blobs // real_backups + (1 if i < blobs % real_backups else 0) for i in range(real_backups)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for b, count in enumerate(per):
        top = Path(src_dir, f"b{b:04d}")
        tops.append(top)
        for s in range(math.ceil(count / FILES_PER_DIR)):
            sub = top / f"s{s:04d}"
            sub.mkdir(parents=True)
            n = min(FILES_PER_DIR, count - s * FILES_PER_DIR)
            data = memoryview(os.urandom(n * blob_bytes))
            for i in range(n):
                fd = os.open(f"{sub}/f{i:04d}", flags, 0o644)
                os.write(fd, data[i * blob_bytes:(i + 1) * blob_bytes])
                os.close(fd)
    return tops


def list_snapshots(env):
    """`restic snapshots --json`, without a cache: what restic lists."""
    return json.loads(restic(["snapshots", "--json", "--no-cache"], env) or "[]")


def make_repo(repo_dir, work_dir, blobs, real_backups, snapshots, password="bench",
              blob_bytes=BLOB_BYTES, check=None, keep_source=False):
    """Builds a restic repository (format 2) in REPO_DIR (new or empty) that
    holds BLOBS data blobs, backed up by REAL_BACKUPS real backups, and
    SNAPSHOTS snapshots in all, the others forged onto the real trees in
    turn. WORK_DIR (created) gets the source files and the backups' restic
    cache, removed at the end unless KEEP_SOURCE. Best on tmpfs (/dev/shm,
    BLOBS * BLOB_BYTES of memory): creating and removing the files then
    waits on no disk, nor on other writers' journal commits (200,000 files:
    4 s and 2 s there, against 15 to 60 s and 18 s on a busy ext4), and
    only REPO_DIR, which prune reads, needs to be on the disk under test.
    Then checks that restic lists SNAPSHOTS snapshots and, when CHECK
    (default: BLOBS up to CHECK_MAX_BLOBS), that `restic check` passes.
    Returns the figures: counts, repository bytes and seconds per step."""
    if not 1 <= real_backups <= snapshots:
        raise ValueError("need 1 <= real_backups <= snapshots")
    if check is None:
        check = blobs <= CHECK_MAX_BLOBS
    repo_dir, work_dir = Path(repo_dir), Path(work_dir)
    src, cache = work_dir / "src", work_dir / "restic-cache"
    work_dir.mkdir(parents=True, exist_ok=True)
    env = restic_env(repo_dir, password)
    out = {"blobs": blobs, "blob_bytes": blob_bytes, "real_backups": real_backups, "snapshots": snapshots}

    t = time.monotonic()
    restic(["init", "--repository-version", "2"], env)
    out["init_s"] = time.monotonic() - t

    t = time.monotonic()
    tops = make_files(src, blobs, real_backups, blob_bytes)
    out["create_files_s"] = time.monotonic() - t
    # The backups then read files already on disk, as backups do. Timed
    # apart: sync is machine-wide, so it also waits on others' writeback.
    t = time.monotonic()
    os.sync()
    out["sync_s"] = time.monotonic() - t

    # One run per top-level directory: each scans its own files only, and
    # gets its own tree. With a cache in WORK_DIR, not the user's.
    t = time.monotonic()
    real = []
    per_backup = []
    for top in tops:
        tb = time.monotonic()
        lines = restic(["backup", "--json", "--quiet", "--host", "cairn-bench",
                        "--cache-dir", str(cache), str(top)], env).splitlines()
        per_backup.append(time.monotonic() - tb)
        summary = [json.loads(x) for x in lines if '"summary"' in x][-1]
        real.append(summary["snapshot_id"])  # restic 0.14 prints a short ID
    out["backup_s"] = time.monotonic() - t
    out["backup_s_each"] = [round(x, 2) for x in per_backup]

    # Forged snapshots: the real snapshot's JSON as restic stored it (read
    # back with `restic cat`, so whatever fields this restic version writes)
    # with an earlier time, one minute apart, stored uncompressed (format 2
    # reads a plaintext that starts with '{' as plain JSON).
    t = time.monotonic()
    templates = [json.loads(restic(["cat", "snapshot", sid, "--no-cache"], env)) for sid in real]
    key = master_key(repo_dir, password)
    start = min(_parse_go_time(s["time"]) for s in templates)
    forged = snapshots - real_backups
    for i in range(forged):
        doc = dict(templates[i % real_backups])
        doc["time"] = _go_time(start - timedelta(minutes=forged - i))
        save_unpacked(repo_dir, "snapshots", key, json.dumps(doc, separators=(",", ":")).encode())
    os.sync()
    out["forge_s"] = time.monotonic() - t
    out["forged"] = forged

    t = time.monotonic()
    listed = list_snapshots(env)
    out["list_s"] = time.monotonic() - t
    if len(listed) != snapshots:
        raise RuntimeError(f"restic lists {len(listed)} snapshots, expected {snapshots}")
    trees = {s["tree"] for s in listed}
    if len(trees) != real_backups:
        raise RuntimeError(f"restic lists {len(trees)} trees, expected {real_backups}")
    if check:
        t = time.monotonic()
        restic(["check", "--no-cache"], env)
        out["check_s"] = time.monotonic() - t
    out["checked"] = bool(check)

    if not keep_source:
        t = time.monotonic()
        subprocess.run(["rm", "-rf", str(src), str(cache)], check=True)
        out["cleanup_s"] = time.monotonic() - t
    out["repo_bytes"] = du(repo_dir)
    out["real_snapshot_ids"] = real
    return out


def _time_v(path):
    """Wall seconds and peak RSS (KiB) from a `/usr/bin/time -v` report."""
    text = Path(path).read_text()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    return secs, rss


def forget_and_prune(repo_dir, forget_fraction, password="bench", prune_only=False):
    """Forgets, by ID and in batches, every snapshot (the real one and the
    forged ones) of the first ceil(trees * FORGET_FRACTION) real trees, in
    the order of their backups, so that fraction of the data blobs is left
    unreferenced; then `restic prune --max-unused 0`, timed by
    /usr/bin/time. PRUNE_ONLY skips the forget (for a repository forgotten
    already). Returns prune wall seconds and peak RSS, and the repository
    bytes before and after the prune.

    Each backup wrote packs of its own, so the forgotten blobs fill whole
    packs: prune deletes packs and repacks none (its log says "to repack:
    0 blobs"). A shape where prune must repack needs backups that share
    packs.

    Every run is --no-cache. Cairn's GC is server-side and reads its metadata
    where it lies; restic with --no-cache reads the index, snapshots and trees
    straight from the repository on the same disk, which is that. A cold
    cache would add a download into the cache that a server does not do, and
    a warm one would be a copy on the same disk anyway."""
    repo_dir = Path(repo_dir)
    env = restic_env(repo_dir, password)
    out = {"forget_fraction": forget_fraction}
    if not prune_only:
        t = time.monotonic()
        listed = list_snapshots(env)
        by_tree = {}
        for s in listed:
            by_tree.setdefault(s["tree"], []).append(s)
        # A real backup's tree is the one of its directory, bNNNN: ordering
        # trees by path is ordering them by backup.
        order = sorted(by_tree, key=lambda tr: min(min(s["paths"]) for s in by_tree[tr]))
        gone = order[:math.ceil(len(order) * forget_fraction)]
        ids = [s["id"] for tr in gone for s in by_tree[tr]]
        for i in range(0, len(ids), FORGET_BATCH):
            restic(["forget", "--no-cache", *ids[i:i + FORGET_BATCH]], env)
        out.update(trees=len(order), trees_forgotten=len(gone), snapshots_forgotten=len(ids),
                   snapshots_left=len(listed) - len(ids), forget_s=time.monotonic() - t)
    out["repo_bytes_before"] = du(repo_dir)
    os.sync()  # nothing dirty left for prune to wait on
    fd, report = tempfile.mkstemp(prefix="restic-prune-time-")
    os.close(fd)
    t = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v", "-o", str(report),
                               "restic", "prune", "--max-unused", "0", "--no-cache"],
                       env=env, text=True, capture_output=True)
    wall = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError(f"restic prune failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    time_wall, rss = _time_v(report)
    os.unlink(report)
    out.update(prune_s=wall, prune_time_v_wall_s=time_wall, prune_max_rss_kib=rss,
               repo_bytes_after=du(repo_dir),
               prune_log=[x for x in p.stdout.splitlines() if x.strip() and not x.startswith("[")],
               prune_stderr=p.stderr.strip())
    return out
