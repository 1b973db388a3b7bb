"""Starts and stops a `cairn up` cluster for the end-to-end tests.

Every listener uses port 0; the ports the cluster picked are read back from
the `env` file that `cairn up` writes once the cluster answers requests.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import boto3
from botocore.config import Config

BIN = os.environ.get("CAIRN_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/cairn-target")) / "debug/cairn"
)


def wait_for(pred, timeout=120.0, interval=0.05, what="condition"):
    """Polls `pred` until it returns a truthy value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def parse_env(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
    return env


class Cluster:
    def __init__(self, data_dir, args=(), env=None):
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.proc = None
        self.env = None
        self.log = None

    def start(self):
        env_file = self.data_dir / "env"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.data_dir / "up.log", "ab")
        self.proc = subprocess.Popen(
            [BIN, "up", "--data-dir", str(self.data_dir), "--http-port", "0", "--nbd-port", "0",
             *self.args],
            env={**os.environ, **self.extra_env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"cairn up exited with {self.proc.returncode}:\n"
                    + (self.data_dir / "up.log").read_text()[-4000:]
                )
            return env_file.exists()

        wait_for(ready, timeout=180, what="cairn up to write its env file")
        self.env = parse_env(env_file)
        return self

    def stop(self):
        """Ctrl-C, as a user would; every process the cluster started must be gone."""
        if self.proc is None:
            return
        pids = self.child_pids()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=120)
        self.proc = None
        self.log.close()
        for pid in pids:
            wait_for(lambda: not _alive(pid), timeout=30, what=f"process {pid} to exit")
        assert code == 0, f"cairn up exited with {code}"
        assert not (self.data_dir / "env").exists(), "env file left behind after stop"

    def child_pids(self):
        pids = []
        for addr in self.data_dir.glob("*/addr.toml"):
            for line in addr.read_text().splitlines():
                if line.startswith("pid"):
                    pids.append(int(line.split("=")[1]))
        return pids

    @property
    def endpoint(self):
        return self.env["AWS_ENDPOINT_URL"]

    @property
    def zones(self):
        return self.env["CAIRN_ZONES"].split(",")

    @property
    def nbd(self):
        return self.env["CAIRN_NBD"]

    def nbd_uri(self, volume_id):
        return f"nbd://{self.nbd}/{volume_id}"

    def client(self, service="ec2"):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            config=Config(retries={"max_attempts": 8, "mode": "standard"}),
        )

    def aws_env(self):
        env = dict(os.environ)
        env.update(self.env)
        return env


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        return state != "Z"
    except FileNotFoundError:
        return False
