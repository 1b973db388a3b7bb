"""Volumes larger than one file on the volume host's file system: ext4 holds
no file of 16 TiB, so a volume is cut into 8 TiB segment files. Driven by
boto3 and qemu-io over NBD, as a user would."""
import subprocess

from cluster import wait_for
from util import AZ_A, AZ_B, BLOCK, GIB

FAST = {"Delay": 1, "MaxAttempts": 300}
TIB = 1024 * GIB
SEGMENT = 8 * TIB


def qemu_io(uri, *commands):
    args = ["qemu-io", "-f", "raw"]
    for c in commands:
        args += ["-c", c]
    r = subprocess.run(args + [uri], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr
    return r.stdout


def volume_files(cluster, vol):
    """The names of `vol`'s files on whichever chunk node hosts it."""
    return sorted(p.name for p in cluster.data_dir.glob(f"chunk-*/data/volumes/{vol}.img*"))


def test_a_16_tib_volume_spans_segments_through_grow_snapshot_restore_and_delete(ec2, cluster):
    ebs = cluster.client("ebs")
    vol = ec2.create_volume(AvailabilityZone=AZ_A, Size=8192, VolumeType="gp3")["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    assert volume_files(cluster, vol) == [f"{vol}.img"], "8 TiB is one file"
    uri = cluster.nbd_uri(vol)
    qemu_io(uri, f"write -P 0x11 0 {BLOCK}", f"write -P 0x22 {SEGMENT - BLOCK} {BLOCK}")

    # Grown to 16 TiB: a second segment; a write across the boundary lands
    # on both sides of it.
    ec2.modify_volume(VolumeId=vol, Size=16384)
    wait_for(lambda: ec2.describe_volumes_modifications(VolumeIds=[vol])["VolumesModifications"][0]
             ["ModificationState"] == "completed", timeout=60, what="the volume to grow")
    assert volume_files(cluster, vol) == [f"{vol}.img", f"{vol}.img.1"]
    size = 16 * TIB
    qemu_io(uri, f"write -P 0x33 {SEGMENT - 4096} 8192", f"write -P 0x44 {size - BLOCK} {BLOCK}")
    expect = [  # (offset, length, pattern) after both writes
        (0, BLOCK, 0x11), (SEGMENT - BLOCK, BLOCK - 4096, 0x22), (SEGMENT - 4096, 8192, 0x33),
        (SEGMENT + 4096, BLOCK - 4096, 0), (SEGMENT + TIB, BLOCK, 0), (size - BLOCK, BLOCK, 0x44)]
    reads = [f"read -P {p:#x} {o} {n}" for o, n, p in expect]
    qemu_io(uri, *reads)

    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)
    blocks = ebs.list_snapshot_blocks(SnapshotId=snap)
    assert blocks["VolumeSize"] == 16384
    want = sorted({o // BLOCK for o, n, p in expect if p} | {(SEGMENT + 4095) // BLOCK})
    assert [b["BlockIndex"] for b in blocks["Blocks"]] == want

    restored = ec2.create_volume(AvailabilityZone=AZ_B, SnapshotId=snap)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[restored], WaiterConfig=FAST)
    assert volume_files(cluster, restored) == [f"{restored}.img", f"{restored}.img.1"]
    qemu_io(cluster.nbd_uri(restored), *reads)

    for v in (vol, restored):
        ec2.delete_volume(VolumeId=v)
        wait_for(lambda: not volume_files(cluster, v), timeout=60, what="the segments to go")
    ec2.delete_snapshot(SnapshotId=snap)
