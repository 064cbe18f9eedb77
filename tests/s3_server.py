"""A real S3 endpoint for tests: ``moto_server`` on 127.0.0.1, reached through s3fs.

``S3Endpoint`` starts the server on a free loopback port and points fsspec at it through
the environment (``FSSPEC_S3_ENDPOINT_URL`` plus dummy credentials), so Beam worker
processes started by the test inherit the same endpoint.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def s3_endpoint(monkeypatch: pytest.MonkeyPatch, bucket: str = "clipcrawl-test") -> Iterator[str]:
    """Yields ``s3://bucket``; the server and the environment are undone on exit."""
    binary = shutil.which("moto_server")
    if binary is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {url}") from None
                time.sleep(0.1)
        for name, value in {**_ENV, "FSSPEC_S3_ENDPOINT_URL": url, "AWS_ENDPOINT_URL": url}.items():
            monkeypatch.setenv(name, value)
        import fsspec
        import fsspec.config

        fsspec.config.conf.clear()
        fsspec.config.set_conf_env(fsspec.config.conf)  # fsspec read the environment at import
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(bucket)
        yield f"s3://{bucket}"
    finally:
        server.terminate()
        server.wait(timeout=10)
        import fsspec.config

        fsspec.config.conf.clear()
        fsspec.config.set_conf_env(fsspec.config.conf)
