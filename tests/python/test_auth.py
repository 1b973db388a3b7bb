"""Every request signed and owned, as an operator and a client see it:
`cairn up` checks SigV4 with the key pair it wrote to its env file;
`cairn admin account create` / `key create|list|revoke` manage accounts
and keys; a wrong secret, an unknown key, a stale or expired signature get
AWS's codes; a revoked key stops working within seconds; another account
sees none of the first one's resources."""
import datetime
import hashlib
import hmac
import re
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET


from accounts import admin, client, code_of, new_key
from cluster import wait_for


def test_the_env_file_key_pair_is_a_real_one(cluster, ec2):
    env = cluster.env
    assert env["AWS_ACCESS_KEY_ID"].startswith("AKIA"), env
    ec2.describe_volumes()
    key_file = (cluster.data_dir / "cluster.key").stat()
    assert key_file.st_mode & 0o777 == 0o600
    # The secret is sealed: it appears in no metadata file on disk.
    secret = env["AWS_SECRET_ACCESS_KEY"].encode()
    for f in cluster.data_dir.glob("meta-*/raft/**/*"):
        if f.is_file():
            assert secret not in f.read_bytes(), f


def test_bad_credentials_get_aws_codes_and_change_nothing(cluster, ec2):
    before = len(ec2.describe_volumes()["Volumes"])
    wrong = client(cluster, cluster.env["AWS_ACCESS_KEY_ID"], "not-the-secret")
    assert code_of(lambda: wrong.create_volume(AvailabilityZone=cluster.zones[0], Size=1)) == \
        ("SignatureDoesNotMatch", 403)
    unknown = client(cluster, "AKIAAAAAAAAAAAAAAAAA", "whatever")
    assert code_of(unknown.describe_volumes) == ("AuthFailure", 401)
    assert len(ec2.describe_volumes()["Volumes"]) == before


def test_accounts_keys_and_revocation(cluster, ec2):
    account = admin(cluster, "account", "create", "tenant-b").stdout.strip()
    assert re.fullmatch(r"[1-9]\d{11}", account), account
    assert "exists" in admin(cluster, "account", "create", "tenant-b", check=False).stderr
    key, secret = new_key(cluster, "tenant-b")
    other = client(cluster, key, secret)

    mine = ec2.create_volume(AvailabilityZone=cluster.zones[0], Size=1)["VolumeId"]
    theirs = other.create_volume(AvailabilityZone=cluster.zones[0], Size=1)["VolumeId"]
    # Each account sees only its own.
    assert [v["VolumeId"] for v in other.describe_volumes()["Volumes"]] == [theirs]
    assert theirs not in [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]]
    assert code_of(lambda: other.delete_volume(VolumeId=mine))[0] == "InvalidVolume.NotFound"

    listed = admin(cluster, "key", "list", "--account", "tenant-b").stdout
    assert re.search(rf"{key}\s+{account}\s+active", listed), listed
    assert admin(cluster, "key", "revoke", key).stdout.strip() == f"{key} revoked"
    wait_for(lambda: code_of(other.describe_volumes) == ("AuthFailure", 401), timeout=10,
             interval=0.2, what="the revoked key to be refused")
    assert re.search(rf"{key}\s+{account}\s+revoked", admin(cluster, "key", "list").stdout)
    assert "does not exist" in admin(cluster, "key", "revoke", "AKIANOSUCHKEY", check=False).stderr

    key2, secret2 = new_key(cluster, account)
    client(cluster, key2, secret2).delete_volume(VolumeId=theirs)
    ec2.delete_volume(VolumeId=mine)


def _sign(secret, key, region, when, method, query, body, host, presign_expires=None):
    """A SigV4 signature made by hand, at any time (botocore signs only now)."""
    amz = when.strftime("%Y%m%dT%H%M%SZ")
    day = amz[:8]
    scope = f"{day}/{region}/ec2/aws4_request"
    q = dict(query)
    headers = {"host": host}
    if presign_expires is not None:
        q.update({"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": f"{key}/{scope}",
                  "X-Amz-Date": amz, "X-Amz-Expires": str(presign_expires),
                  "X-Amz-SignedHeaders": "host"})
    else:
        headers["x-amz-date"] = amz
    enc = lambda s: urllib.parse.quote(s, safe="-_.~")
    cq = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(q.items()))
    names = sorted(headers)
    canonical = "\n".join([method, "/", cq, "".join(f"{n}:{headers[n]}\n" for n in names),
                           ";".join(names), hashlib.sha256(body).hexdigest()])
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (day, region, "ec2", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    if presign_expires is not None:
        q["X-Amz-Signature"] = sig
        return cq + f"&X-Amz-Signature={sig}", {}
    auth = f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={';'.join(names)}, Signature={sig}"
    return cq, {"X-Amz-Date": amz, "Authorization": auth}


def _send(cluster, method, query, headers, body=b""):
    url = cluster.endpoint + "/" + ("?" + query if query else "")
    req = urllib.request.Request(url, data=body or None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_stale_signatures_and_presigned_urls(cluster):
    env = cluster.env
    host = cluster.endpoint.split("//", 1)[1]
    args = (env["AWS_SECRET_ACCESS_KEY"], env["AWS_ACCESS_KEY_ID"], env["AWS_REGION"])
    now = datetime.datetime.now(datetime.timezone.utc)
    body = b"Action=DescribeVolumes&Version=2016-11-15"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for skew, expect in [(0, 200), (-20, 400), (20, 400)]:
        _, h = _sign(*args, now + datetime.timedelta(minutes=skew), "POST", {}, body, host)
        status, text = _send(cluster, "POST", "", {**h, **form}, body)
        assert status == expect, text
        if expect != 200:
            assert "<Code>RequestExpired</Code>" in text, text

    query = {"Action": "DescribeVolumes", "Version": "2016-11-15"}
    q, _ = _sign(*args, now, "GET", query, b"", host, presign_expires=300)
    status, text = _send(cluster, "GET", q, {})
    assert status == 200 and ET.fromstring(text).tag.endswith("DescribeVolumesResponse"), text
    q, _ = _sign(*args, now - datetime.timedelta(hours=2), "GET", query, b"", host, presign_expires=3600)
    status, text = _send(cluster, "GET", q, {})
    assert status == 400 and "<Code>RequestExpired</Code>" in text, text
    # A presigned URL whose action was changed after signing.
    q, _ = _sign(*args, now, "GET", query, b"", host, presign_expires=300)
    status, text = _send(cluster, "GET", q.replace("DescribeVolumes", "DescribeSnapshots"), {})
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in text, text
    # botocore's own presigned URL works too.
    url = cluster.client("ec2").generate_presigned_url("describe_volumes", ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
