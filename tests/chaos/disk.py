"""What the disk faults do to a chunk node's files: rot in pack files.

A pack file (chunk-node/src/store/packfile.rs) is a run of records, each
starting on a 4 KiB boundary: magic "1CPK" (4 bytes), payload length (4,
little-endian), chunk id (32), payload, zeros to the next boundary. Rot is
put in the payload of whole data blocks (512 KiB records), never in a
header or the padding, so that every flip breaks a record's hash.
"""
import os
import struct
import time
from pathlib import Path

MAGIC = 0x4B504331
HEADER = 40
ALIGN = 4096
BLOCK = 524288


def data_records(pack):
    """(payload offset, chunk id hex) of every whole data block record in `pack`."""
    out = []
    size = pack.stat().st_size
    with open(pack, "rb") as f:
        pos = 0
        while pos + HEADER <= size:
            f.seek(pos)
            h = f.read(HEADER)
            magic, length = struct.unpack_from("<II", h)
            if magic != MAGIC:
                pos += ALIGN  # padding after a torn tail, or a damaged header
                continue
            if length == BLOCK and pos + HEADER + length <= size:
                out.append((pos + HEADER, h[8:].hex()))
            pos = -(-(pos + HEADER + length) // ALIGN) * ALIGN
    return out


def rot_candidates(packs_dir, open_only=False):
    """(pack, payload offset, chunk id) of every data record `flip_records`
    may pick. `open_only`: only the pack being appended. With a capacity
    tier a sealed pack on disk is one the uploader is copying to the bucket
    and will then delete: rot written after the uploader read those bytes
    leaves with the local file and is found nowhere (the bucket's copy is
    sound), which says nothing about scrub. The open pack is uploaded, rot
    and all, once sealed."""
    packs = sorted(
        p for p in Path(packs_dir).glob("*")
        if p.suffix == ".open" or (p.suffix == ".pack" and not open_only)
    )
    out = []
    for p in packs:
        try:
            out += [(p, off, cid) for off, cid in data_records(p)]
        except FileNotFoundError:
            pass  # compaction removed it, or sealed it under its other name
    return out


def wait_candidates(packs_dir, count, open_only=False, deadline=90):
    """`rot_candidates`, once at least `count` are there or at the deadline
    (with a capacity tier the open pack may just have been started, the
    sealed ones being in the bucket: the workloads fill it meanwhile)."""
    end = time.monotonic() + deadline
    while True:
        records = rot_candidates(packs_dir, open_only)
        if len(records) >= count or time.monotonic() > end:
            return records
        time.sleep(0.5)


def flip_until(packs_dir, rng, count, open_only=False, deadline=90):
    """Rots `count` records of the node's packs (see `flip_records`), listing
    them again while fewer were hit and the deadline allows: the open pack
    may be sealed under its other name, or a pack compacted away, between
    the listing and the write (one CI run hit none of 8 that way). Returns
    the chunk ids hit."""
    end = time.monotonic() + deadline
    hit = []
    while len(hit) < count:
        left = max(1, end - time.monotonic())
        records = [r for r in wait_candidates(packs_dir, count - len(hit), open_only, left)
                   if r[2] not in hit]
        new = flip_records(records, rng, count - len(hit))
        hit += new
        if time.monotonic() > end:
            break
        if not new:
            time.sleep(0.5)  # nothing new to rot yet: the workloads write more
    return hit


def flip_records(records, rng, count):
    """XORs 16 bytes in the middle of `count` data records chosen at random
    among `records` (from `rot_candidates`); returns the chunk ids hit. A
    record may be dead already (deleted by GC, not yet compacted away), in
    which case nothing reads it again; with 8 records hit, all 8 being dead
    is unlikely enough that the suite asks for at least one to be found."""
    hit = []
    for pack, off, cid in rng.sample(records, min(count, len(records))):
        at = off + rng.randrange(BLOCK - 16)
        try:
            fd = os.open(pack, os.O_RDWR)
        except FileNotFoundError:
            continue  # gone since the listing: nothing there to rot
        try:
            old = os.pread(fd, 16, at)
            os.pwrite(fd, bytes(b ^ 0xA5 for b in old), at)
            os.fsync(fd)
        finally:
            os.close(fd)
        hit.append(cid)
    return hit
