"""The CLI for people: `cairn volume` and `cairn snapshot` verbs against a
`cairn up` cluster, as a user runs them right after `cairn up` (no AWS
variables set: the cluster's env file says where and who). Outcomes are
checked through boto3 and qemu-img: what the CLI says it did is what the
cluster holds."""
import json
import os
import pty
import re
import select
import subprocess

from cluster import BIN
from util import BLOCK, GIB, make_image, nbd_compare, nbd_write


def cli_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def cairn(cluster, *args, check=True):
    r = subprocess.run(
        [BIN, *args, "--data-dir", str(cluster.data_dir)],
        capture_output=True, text=True, timeout=600, env=cli_env(),
    )
    if check:
        assert r.returncode == 0, f"cairn {' '.join(args)} failed:\n{r.stdout}{r.stderr}"
    return r


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_volume_snapshot_restore_round_trip(cluster, ec2, tmp_path):
    created = json.loads(cairn(cluster, "volume", "create", "--size", "1", "--name", "cli-vol",
                               "--output", "json").stdout)
    vol = created["volume_id"]
    assert created["size_gib"] == 1 and created["availability_zone"] == cluster.zones[0]
    assert created["name"] == "cli-vol"
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig={"Delay": 1})

    attach = json.loads(cairn(cluster, "volume", "attach", vol, "--output", "json").stdout)
    assert attach["nbd_url"] == cluster.nbd_uri(vol)
    assert attach["qemu_img"] == f"qemu-img info -f raw {cluster.nbd_uri(vol)}"
    text = cairn(cluster, "volume", "attach", vol).stdout
    assert cluster.nbd_uri(vol) in text and "nbd-client" in text

    image = make_image(tmp_path / "a.img", size=GIB, data_blocks=range(0, 400, 3))
    nbd_write(attach["nbd_url"], image)

    r = cairn(cluster, "snapshot", "create", vol, "--description", "from the cli", "--wait",
              "--output", "json")
    events = json_lines(r.stdout)
    assert events, r.stdout + r.stderr
    snap = events[0]["snapshot_id"]
    percents = [e["percent"] for e in events]
    assert percents == sorted(percents), percents
    last = events[-1]
    assert (last["state"], last["percent"]) == ("completed", 100), events
    # 134 distinct data blocks were written: the copy sent at most those.
    assert 0 < last["bytes_sent"] <= 134 * BLOCK, last
    described = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert (described["State"], described["Description"]) == ("completed", "from the cli")

    listed = json.loads(cairn(cluster, "snapshot", "list", "--volume", vol, "--output", "json").stdout)
    assert [s["snapshot_id"] for s in listed] == [snap]
    assert listed[0]["progress"] == 100 and listed[0]["volume_size_gib"] == 1
    table = cairn(cluster, "snapshot", "list").stdout
    assert table.splitlines()[0].split()[:3] == ["SNAPSHOT", "VOLUME", "STATE"]
    assert any(line.split()[:3] == [snap, vol, "completed"] for line in table.splitlines()), table

    r = cairn(cluster, "snapshot", "restore", snap, "--wait", "--output", "json")
    events = json_lines(r.stdout)
    restored = events[-1]["volume_id"]
    assert events[-1]["hydrated_bytes"] == GIB and events[-1]["percent"] == 100, events
    assert nbd_compare(image, cluster.nbd_uri(restored)) == (0, "Images are identical.\n")

    volumes = cairn(cluster, "volume", "list").stdout.splitlines()
    assert volumes[0].split()[:2] == ["VOLUME", "NAME"]
    rows = {line.split()[0]: line for line in volumes[1:]}
    assert "cli-vol" in rows[vol] and snap in rows[restored], volumes

    for args in (["volume", "delete", restored], ["snapshot", "delete", snap],
                 ["volume", "delete", vol]):
        assert cairn(cluster, *args).stdout.strip() == f"{args[2]} deleted"
    assert ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [snap]}])["Snapshots"] == []


def test_bad_input_is_refused_before_or_by_the_gateway(cluster, ec2):
    before = len(ec2.describe_volumes()["Volumes"])
    for args, says in [
        (["volume", "delete", "vol-xyz"], "is not a volume id"),
        (["volume", "create", "--size", "0"], "a volume is 1 to 65536 GiB"),
        (["volume", "create"], "--size"),
        (["snapshot", "create", "snap-01234567"], "is not a volume id"),
        (["snapshot", "delete", "snap-0123456789abcdef0"], "InvalidSnapshot.NotFound: "),
        (["volume", "delete", "vol-01234567"], "InvalidVolume.NotFound: "),
        (["volume", "create", "--size", "1", "--volume-type", "gp9"], "InvalidParameterValue: "),
        (["snapshot", "wait", "snap-0123456789abcdef0"], "InvalidSnapshot.NotFound: "),
    ]:
        r = cairn(cluster, *args, check=False)
        assert r.returncode != 0, (args, r.stdout)
        assert says in r.stderr, (args, r.stderr)
        assert "panicked" not in r.stderr and "Backtrace" not in r.stderr, r.stderr
    assert len(ec2.describe_volumes()["Volumes"]) == before


def test_snapshot_progress_bar_on_a_terminal(cluster, ec2, tmp_path):
    vol = cairn(cluster, "volume", "create", "--size", "2").stdout.strip()
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig={"Delay": 1})
    nbd_write(cluster.nbd_uri(vol), make_image(tmp_path / "b.img", size=2 * GIB,
                                               data_blocks=range(0, 4096, 2)))
    out = run_in_pty([BIN, "snapshot", "create", vol, "--wait", "--data-dir",
                      str(cluster.data_dir)])
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert re.search(r"\[[=> ]{30}\]\s+\d+%", plain), plain
    assert re.search(r"\d(\.\d+)? [KMG]?i?B/s", plain), plain
    assert "ETA" in plain and "sent after dedup" in plain, plain
    assert re.search(r"completed in \d+\.\d s, [\d.]+ [KMG]iB sent after dedup", plain), plain
    snap = re.findall(r"snap-[0-9a-f]{17}", plain)[-1]
    assert ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "completed"
    ec2.delete_snapshot(SnapshotId=snap)
    ec2.delete_volume(VolumeId=vol)


def run_in_pty(argv, timeout=600):
    """Runs `argv` with a pseudo-terminal as stdout and stderr; its output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env={**cli_env(), "TERM": "xterm-256color", "COLUMNS": "160"})
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                raise AssertionError("the CLI printed nothing for too long")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = proc.wait(timeout=60)
    out = b"".join(chunks).decode(errors="replace")
    assert code == 0, out
    return out
