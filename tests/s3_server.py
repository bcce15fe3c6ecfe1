"""A local S3 for tests: moto's standalone server, started once per test session.

Use it by importing the fixture into a test module::

    from tests.s3_server import s3_server  # noqa: F401

While it runs, the environment points every AWS client at it (``AWS_ENDPOINT_URL``, dummy
credentials, ``us-east-1``), exactly as a researcher's environment points at a real store;
the previous environment comes back at the end of the session.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import pytest

_STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    """A running moto server and a boto3 client for it."""

    endpoint: str
    client: Any

    def create_bucket(self, name: str, objects: Mapping[str, bytes] | None = None) -> str:
        """Create bucket ``name`` holding ``objects`` (key -> bytes); returns ``s3://name``."""
        self.client.create_bucket(Bucket=name)
        for key, body in (objects or {}).items():
            self.put_object(name, key, body)
        return f"s3://{name}"

    def put_object(self, bucket: str, key: str, body: bytes) -> str:
        """Write one object; returns its ``s3://`` URL."""
        self.client.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(process: subprocess.Popen[bytes], endpoint: str, log: IO[bytes]) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"moto server exited with {process.returncode}:\n{output}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto server at {endpoint} did not answer in {_STARTUP_TIMEOUT_S:.0f} s")


def _clear_s3fs_instances() -> None:
    # s3fs keeps one client per set of options, bound to the endpoint it was created with.
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 on a free local port, with the AWS environment pointing at it."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # A file, not a pipe: the server logs every request, and a full pipe would stall it.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_up(process, endpoint, log)
            with pytest.MonkeyPatch.context() as env:
                for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
                    env.delenv(name, raising=False)
                env.setenv("AWS_ACCESS_KEY_ID", "testing")
                env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
                env.setenv("AWS_DEFAULT_REGION", "us-east-1")
                env.setenv("AWS_ENDPOINT_URL", endpoint)
                _clear_s3fs_instances()
                import boto3

                yield S3Server(endpoint, boto3.client("s3"))
                _clear_s3fs_instances()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
