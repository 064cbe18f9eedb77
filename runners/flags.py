"""What a preset needs to read from raw arguments, and where shared state may live.

Presets run before Beam parses anything, so they read the user's flags here: a flag counts
as given in both spellings (``--name=value`` and ``--name value``), the last occurrence wins
as in Beam's own parser, and a preset adds only the flags the user did not give.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from clipcrawl.pipelines.options import OptionsError


class PresetError(OptionsError):
    """A preset cannot build a working job from these flags; the message says what to add."""


def values(argv: Sequence[str], name: str) -> list[str]:
    """Every value given for ``--name``, in order (a bare ``--name`` counts as ``""``)."""
    flag, found = f"--{name}", []
    for index, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            found.append(arg[len(flag) + 1 :])
        elif arg == flag:
            following = argv[index + 1] if index + 1 < len(argv) else ""
            found.append("" if following.startswith("--") else following)
    return found


def value(argv: Sequence[str], name: str) -> str | None:
    """The value that wins for ``--name`` (the last one), or None when it is not given."""
    found = values(argv, name)
    return found[-1] if found else None


def given(argv: Sequence[str], name: str) -> bool:
    return bool(values(argv, name))


def missing_defaults(argv: Sequence[str], defaults: Mapping[str, str | None]) -> list[str]:
    """``--name=value`` for each default the user did not give; a None value is a bare switch."""
    return [
        f"--{name}" if default is None else f"--{name}={default}"
        for name, default in defaults.items()
        if not given(argv, name)
    ]


def is_loopback_host(address: str) -> bool:
    """True for addresses on this machine: ``localhost``, 127.0.0.0/8, ``::1`` (any scheme and port)."""
    try:
        host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # not an address (a name, or Flink's "[auto]")
        return False


def _is_local_path(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def require_shared_state(argv: Sequence[str], preset: str, workers_share_disk: bool) -> None:
    """Workers elsewhere must reach the ledger and every input and output path.

    The writer marks shards done from the workers, so a SQLite file (the default, next to
    a local output) only works when every worker sees this machine's disk.
    """
    if workers_share_disk:
        return
    coordinator = value(argv, "coordinator")
    if not coordinator or coordinator.startswith("sqlite"):
        raise PresetError(
            f"the {preset} preset runs the shard writer on other machines, which cannot reach a SQLite "
            "file here: give --coordinator=postgresql+psycopg://USER:PASSWORD@HOST/DB (a server they can reach)"
        )
    paths = [("--output", path) for path in values(argv, "output")]
    paths += [("--input", path) for path in values(argv, "input")]
    paths += [("--input_base_url", path) for path in values(argv, "input_base_url")]  # the manifest is read here
    for flag, path in paths:
        if path and _is_local_path(path):
            raise PresetError(
                f"the {preset} preset's workers cannot read or write {flag}={path} on this machine: "
                "use object storage (gs://..., s3://...)"
            )
