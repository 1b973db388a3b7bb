"""Disk images, NBD I/O through qemu-img, and raw EC2 Query requests."""
import os
import subprocess
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

BLOCK = 524288
GIB = 1 << 30


def make_image(path, size=GIB, data_blocks=(), repeat=None, seed=0):
    """A sparse raw image: random data in `data_blocks` (block indexes), zeros
    elsewhere. With `repeat`, those blocks all hold the same bytes."""
    rnd = os.urandom if seed == 0 else None
    with open(path, "wb") as f:
        f.truncate(size)
        same = os.urandom(BLOCK) if repeat else None
        for i in data_blocks:
            f.seek(i * BLOCK)
            f.write(same if same is not None else rnd(BLOCK))
    return path


def nbd_write(uri, image):
    subprocess.run(
        ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(image), uri],
        check=True, capture_output=True, timeout=600,
    )


def nbd_compare(image, uri):
    """0 when the NBD export's bytes equal the image's (qemu-img compare)."""
    r = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(image), uri],
        capture_output=True, text=True, timeout=600,
    )
    return r.returncode, r.stdout + r.stderr


def restore_and_compare(ec2, cluster, snap, image, zone):
    """CreateVolume from `snap` in `zone`, then the whole volume compared
    with `image` over NBD; returns the volume id."""
    vol = ec2.create_volume(AvailabilityZone=zone, SnapshotId=snap)["VolumeId"]
    ec2.get_waiter("volume_available").wait(
        VolumeIds=[vol], WaiterConfig={"Delay": 1, "MaxAttempts": 300})
    code, out = nbd_compare(image, cluster.nbd_uri(vol))
    assert code == 0, out
    return vol


def nbd_read(uri, out):
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(out)],
        check=True, capture_output=True, timeout=600,
    )


# The boto3 end-to-end suites (test_ec2, test_ebs) run against a cluster named
# as real AWS scripts expect: `cairn up --region us-east-1 --account-id ...`.
E2E_REGION = "us-east-1"
E2E_ACCOUNT = "210987654321"
AZ_A, AZ_B = "us-east-1a", "us-east-1b"
E2E_ARGS = ["--region", E2E_REGION, "--account-id", E2E_ACCOUNT]


def sign(method, url, body, env, region=None, service="ec2", headers=None):
    """Headers botocore's SigV4 signer adds for the cluster's key pair in `env`."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    creds = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    SigV4Auth(creds, service, region or env["AWS_REGION"]).add_auth(req)
    return dict(req.headers.items())


def raw_query(cluster, body, region=None, auth=True):
    """POSTs a hand-made EC2 Query body, signed with the cluster's key pair
    (for `region`, default the cluster's); returns (status, parsed XML root, text)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    url = cluster.endpoint + "/"
    if auth:
        headers = sign("POST", url, body.encode(), cluster.env, region=region, headers=headers)
    req = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    return status, ET.fromstring(text), text


def error_code(root):
    """(Code, RequestID) of an EC2 XML error envelope."""
    code = root.find("./Errors/Error/Code")
    rid = root.find("./RequestID")
    return (code.text if code is not None else None, rid.text if rid is not None else None)


def http_json(url):
    import json
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read().decode())
