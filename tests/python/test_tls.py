"""A closed cluster network, as qemu and an operator see it: the NBD door
offers TLS (NBD_OPT_STARTTLS) that qemu's tls-creds-x509 object accepts,
with the cluster CA `cairn up` made; a CA that did not sign the door's
certificate is refused; with --nbd-tls-required the door refuses clear text;
the chunk nodes' own NBD ports accept no one without a cluster certificate;
and the cluster's files hold its CA and one certificate per process."""
import subprocess
import uuid

import pytest

from cluster import BIN, Cluster
from util import AZ_A, E2E_ARGS, GIB, make_image

FAST = {"Delay": 1, "MaxAttempts": 120}


def tls_object(creds_dir):
    return f"tls-creds-x509,id=tls0,dir={creds_dir},endpoint=client"


def nbd_opts(hostport, volume, tls=True):
    host, port = hostport.rsplit(":", 1)
    opts = f"driver=nbd,host={host},port={port},export={volume}"
    return opts + (",tls-creds=tls0" if tls else "")


def qemu_write(image, hostport, volume, creds_dir):
    return subprocess.run(
        ["qemu-img", "convert", "-n", "-f", "raw", "--object", tls_object(creds_dir),
         "--target-image-opts", str(image), nbd_opts(hostport, volume)],
        capture_output=True, text=True, timeout=600)


def qemu_compare(image, hostport, volume, creds_dir, tls=True):
    args = ["qemu-img", "compare"]
    if creds_dir:
        args += ["--object", tls_object(creds_dir)]
    args += ["--image-opts", f"driver=file,filename={image}", nbd_opts(hostport, volume, tls)]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def new_volume(ec2):
    vol = ec2.create_volume(AvailabilityZone=AZ_A, Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    return vol


def test_qemu_over_tls_and_a_foreign_ca_refused(cluster, ec2, tmp_path):
    creds = cluster.env["CAIRN_NBD_TLS_DIR"]
    vol = new_volume(ec2)
    img = make_image(tmp_path / "disk.img", GIB, [0, 3, 1000])
    r = qemu_write(img, cluster.nbd, vol, creds)
    assert r.returncode == 0, r.stderr
    r = qemu_compare(img, cluster.nbd, vol, creds)
    assert r.returncode == 0, r.stdout + r.stderr
    # Offered, not required here: clear text still reads the same bytes.
    r = qemu_compare(img, cluster.nbd, vol, None, tls=False)
    assert r.returncode == 0, r.stdout + r.stderr

    # A CA of another cluster did not sign the door's certificate.
    other = tmp_path / "other-ca"
    out = subprocess.run([BIN, "admin", "tls", "--ca-dir", str(other)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    foreign = tmp_path / "foreign-creds"
    foreign.mkdir()
    (foreign / "ca-cert.pem").write_text((other / "ca.pem").read_text())
    r = qemu_compare(img, cluster.nbd, vol, foreign)
    assert r.returncode not in (0, 1), r.stdout + r.stderr
    assert "certificate" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def test_chunk_nodes_accept_only_cluster_certificates(cluster, ec2, tmp_path):
    vol = new_volume(ec2)
    # The volume's host, reached directly rather than through the door.
    host = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]
    assert host["State"] == "available"
    nbd_ports = []
    for addr in cluster.data_dir.glob("chunk-*/addr.toml"):
        for line in addr.read_text().splitlines():
            if line.startswith("nbd"):
                nbd_ports.append(line.split("=")[1].strip().strip('"'))
    assert nbd_ports
    img = make_image(tmp_path / "zeros.img", GIB)
    for hostport in nbd_ports:
        # Clear text: refused (TLS required).
        r = qemu_compare(img, hostport, vol, None, tls=False)
        assert r.returncode not in (0, 1), r.stdout + r.stderr
        # TLS with the cluster CA but no client certificate: refused too.
        r = qemu_compare(img, hostport, vol, cluster.env["CAIRN_NBD_TLS_DIR"])
        assert r.returncode not in (0, 1), r.stdout + r.stderr
    # Through the door the volume reads fine (all zeros).
    r = qemu_compare(img, cluster.nbd, vol, cluster.env["CAIRN_NBD_TLS_DIR"])
    assert r.returncode == 0, r.stdout + r.stderr

    tls = cluster.data_dir / "tls"
    assert (tls / "ca.key").stat().st_mode & 0o777 == 0o600
    for member in ["meta-1", "meta-2", "meta-3", "gateway", "admin"]:
        assert (tls / member / "node.key").stat().st_mode & 0o777 == 0o600, member
        assert (tls / member / "node.pem").exists() and (tls / member / "ca.pem").exists()


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cairn-tls") / "data",
                [*E2E_ARGS, "--nbd-tls-required"]).start()
    yield c
    c.stop()


def test_required_tls_refuses_clear_text(strict, tmp_path):
    ec2 = strict.client("ec2")
    vol = new_volume(ec2)
    img = make_image(tmp_path / "disk.img", GIB, [1, 2, uuid.uuid4().int % 2000])
    r = qemu_write(img, strict.nbd, vol, strict.env["CAIRN_NBD_TLS_DIR"])
    assert r.returncode == 0, r.stderr
    r = qemu_compare(img, strict.nbd, vol, None, tls=False)
    assert r.returncode not in (0, 1), r.stdout + r.stderr
    assert "tls" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    r = qemu_compare(img, strict.nbd, vol, strict.env["CAIRN_NBD_TLS_DIR"])
    assert r.returncode == 0, r.stdout + r.stderr
