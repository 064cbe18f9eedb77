"""Shared fixtures: paths to the real crawl data and a Beam runner that needs no download."""

from __future__ import annotations

import glob
import hashlib
import ipaddress
import os
import pathlib
import socket
from collections.abc import Iterator

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

DATA = pathlib.Path(__file__).parent / "data"
WAT_2014 = DATA / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat"
WAT_2014_GZ = DATA / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz"
WAT_WHIRLWIND = DATA / "whirlwind.warc.wat.gz"


def beam_options(*extra: str) -> PipelineOptions:
    """FnApiRunner: the DirectRunner's engine, without its attempt to download Prism."""
    return PipelineOptions(["--runner=FnApiRunner", *extra])


@pytest.fixture
def fnapi_options() -> PipelineOptions:
    return beam_options()


def pytest_configure(config: pytest.Config) -> None:
    # Beam's TestPipeline is a class named Test*: not a test.
    config.addinivalue_line("filterwarnings", "ignore:cannot collect test class 'TestPipeline'")
    config.addinivalue_line("markers", "slow: runs the real pipeline several times (tens of seconds); CI runs it too")


# --- Loopback-only guard: no test may open a connection to anything but this machine. ---

_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")


def _is_loopback_target(address: object) -> bool:
    """AF_UNIX paths and 127.0.0.0/8, ::1 (also IPv4-mapped) are allowed; all else is not."""
    if not isinstance(address, tuple):
        return True  # AF_UNIX path (str/bytes) or an abstract socket name
    host = str(address[0]).strip("[]").split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: connecting would resolve it to who knows where
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in _LOOPBACK_V4 if isinstance(ip, ipaddress.IPv4Address) else ip == ipaddress.IPv6Address("::1")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything connects to a non-loopback address.

    The connect is refused (``PermissionError``) and recorded, and the test fails at
    teardown even if the code under test swallowed the error. gRPC's own C sockets (Beam's
    FnApiRunner workers) and worker subprocesses are out of reach here, and use loopback.
    """
    violations: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create_connection = socket.create_connection

    def refuse(address: object) -> None:
        violations.append(repr(address))
        raise PermissionError(f"test tried to connect to non-loopback address {address!r}")

    def connect(sock: socket.socket, address: object) -> None:
        if not _is_loopback_target(address):
            refuse(address)
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: object) -> int:
        if not _is_loopback_target(address):
            refuse(address)
        return real_connect_ex(sock, address)

    def create_connection(address: tuple, *args: object, **kwargs: object) -> socket.socket:
        if not _is_loopback_target(address):
            refuse(address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield
    assert not violations, f"non-loopback connections attempted: {violations}"


def wat_records(uri: str) -> list:
    """The WAT JSON records of a file (both readers agree: tests/test_archive.py)."""
    from clipcrawl.io.archive import WAT_JSON, iter_archive

    return [record for record in iter_archive(uri) if getattr(record, "kind", None) == WAT_JSON]


# Read by hand from the one HTML response record with IMG@/src links in the 2014 WAT (and the
# same page's <img> tags in the matching WARC): three relative URLs and one absolute.
PAGE_2014 = "http://0pointer.de/photos/?gallery=Australia&photo=496"
PAIRS_2014 = [
    ("http://0pointer.de/photos/galleries/Australia/lq/img-496.jpg", "496"),
    ("http://0pointer.de/photos/galleries/Australia/thumbs/img-495.jpg", "Previous"),
    ("http://0pointer.de/photos/galleries/Australia/thumbs/img-497.jpg", "Next"),
    ("http://creativecommons.org/images/public/somerights20.png", "Creative Commons License"),
]


def download_batches(config, *batches: list) -> list:
    """The download DoFn for ``config``, set up, fed ``batches`` as one bundle, torn down."""
    from clipcrawl.transforms.download import _DownloadBatchFn

    fn = _DownloadBatchFn(config)
    fn.setup()
    try:
        return run_download_fn(fn, *batches)
    finally:
        fn.teardown()


def run_download_fn(fn, *batches: list) -> list:
    """Feeds batches to a set-up download DoFn as one bundle; the samples, in key order."""
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import Timestamp

    fn.start_bundle()
    handed_on = []
    for batch in batches:
        handed_on += list(fn.process(batch, Timestamp(0), GlobalWindow()))
    handed_on += list(fn.finish_bundle())
    return sorted((windowed.value for windowed in handed_on), key=lambda sample: sample.key)


def output_fingerprint(output: str) -> dict[str, tuple[float, str]]:
    """mtime and content hash of every dataset file (not the ledger)."""
    fingerprint = {}
    for path in sorted(glob.glob(os.path.join(output, "0*"))):
        with open(path, "rb") as handle:
            fingerprint[os.path.basename(path)] = (os.stat(path).st_mtime_ns, hashlib.sha256(handle.read()).hexdigest())
    return fingerprint
