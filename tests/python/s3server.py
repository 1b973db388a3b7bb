"""A real S3-compatible server for the tests and benchmarks: s3s-fs (a Rust
S3 server storing objects as files), installed by scripts/deps under
~/.cache/cairn-tools. Listens on port 0; the address is read from its log."""
import os
import re
import subprocess
from pathlib import Path

import boto3
from botocore.config import Config

from cluster import wait_for

S3S_FS = os.environ.get("CAIRN_S3S_FS") or str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cairn-tools/bin/s3s-fs")
ACCESS_KEY = "cairn-test-access"
SECRET_KEY = "cairn-test-secret-key"


class S3Server:
    def __init__(self, root):
        self.root = Path(root)
        self.proc = None
        self.url = None

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        log_path = self.root.parent / f"{self.root.name}.log"
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [S3S_FS, "--host", "127.0.0.1", "--port", "0", "--access-key", ACCESS_KEY,
             "--secret-key", SECRET_KEY, str(self.root)],
            env={**os.environ, "RUST_LOG": "info"}, stdout=self.log, stderr=subprocess.STDOUT)

        def listening():
            assert self.proc.poll() is None, log_path.read_text()
            m = re.search(r"server is running at (http://\S+)", log_path.read_text())
            return m and m.group(1)
        self.url = wait_for(listening, timeout=30, what="the S3 server to listen")
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None
            self.log.close()

    def client(self):
        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}))

    def bucket(self, name):
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket):
        """key -> size of every object in `bucket`."""
        out = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out

    def capacity_args(self, bucket):
        """`cairn up` flags and environment for a capacity tier in `bucket`."""
        args = ["--capacity-s3-endpoint", self.url, "--capacity-s3-bucket", bucket]
        env = {"CAIRN_CAPACITY_S3_ACCESS_KEY_ID": ACCESS_KEY,
               "CAIRN_CAPACITY_S3_SECRET_ACCESS_KEY": SECRET_KEY}
        return args, env
