"""Accounts and keys made with `cairn admin`, clients signed with them, and
the AWS error code a call gets."""
import re
import subprocess

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from cluster import BIN


def admin(cluster, *args, check=True, timeout=120):
    r = subprocess.run([BIN, "admin", *args, "--data-dir", str(cluster.data_dir)],
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def client(cluster, key, secret, service="ec2"):
    return boto3.client(service, endpoint_url=cluster.endpoint, region_name=cluster.env["AWS_REGION"],
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))


def code_of(call):
    """(Code, HTTP status) of the error `call` raises; None when it succeeds."""
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    return None


def new_key(cluster, account):
    out = admin(cluster, "key", "create", account).stdout
    pairs = dict(line.split("=", 1) for line in out.split())
    assert set(pairs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, out
    assert re.fullmatch(r"AKIA[A-Z2-7]{16}", pairs["AWS_ACCESS_KEY_ID"]), out
    return pairs["AWS_ACCESS_KEY_ID"], pairs["AWS_SECRET_ACCESS_KEY"]
