"""A hot folder: the input files that have appeared in a directory or fsspec URL, once complete.

``clipcrawl run --watch DIR_OR_URL`` lists the folder every cycle. A file is taken when two
listings ``settle`` seconds apart agree on its size (a copy still in progress grows between
them) and its name is an input clipcrawl reads; names of partial downloads and hidden
files are never taken. Local folders and object stores are listed recursively; an http(s)
index page is read one level deep (its links).
"""

from __future__ import annotations

import dataclasses
import posixpath
import threading

from fsspec.core import url_to_fs

from clipcrawl.io.inputs import InputError
from clipcrawl.io.url_lists import URL_LIST_SUFFIXES
from clipcrawl.io.webdataset_input import WEBDATASET_SUFFIXES

WARC_SUFFIXES = (".wat", ".wat.gz", ".warc", ".warc.gz")
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", ".inprogress", ".lock")


@dataclasses.dataclass(frozen=True)
class WatchConfig:
    """``--watch`` and its pacing."""

    source: str
    interval: float = 30.0  # seconds between cycles
    settle: float = 5.0  # seconds between the two listings that must agree on a new file's size
    cycles: int = 0  # stop after this many cycles; 0 runs until stopped

    def __post_init__(self) -> None:
        if self.interval < 0:
            raise ValueError(f"--watch_interval must be >= 0, got {self.interval}")
        if self.settle < 0:
            raise ValueError(f"--watch_settle must be >= 0, got {self.settle}")
        if self.cycles < 0:
            raise ValueError(f"--watch_cycles must be >= 0 (0: until stopped), got {self.cycles}")


def is_input_name(path: str, any_kind: bool = False) -> bool:
    """Whether a file name is an input to take (``any_kind`` when --input_format names the kind)."""
    name = posixpath.basename(path.rstrip("/")).lower()
    if not name or name.startswith((".", "_")) or name.endswith(PARTIAL_SUFFIXES):
        return False
    return any_kind or name.endswith(WARC_SUFFIXES + tuple(URL_LIST_SUFFIXES) + tuple(WEBDATASET_SUFFIXES))


class HotFolder:
    """Lists one folder; remembers nothing (the ledger knows what was registered)."""

    def __init__(self, source: str, any_kind: bool = False) -> None:
        self.source = source
        self._any_kind = any_kind
        self._fs, self._root = url_to_fs(source)
        self._remote = "://" in source and not source.startswith("file://")
        protocols = {self._fs.protocol} if isinstance(self._fs.protocol, str) else set(self._fs.protocol)
        self._http = bool(protocols & {"http", "https"})
        if not self._http and not self._fs.isdir(self._root):
            raise InputError(f"--watch {source!r} is not a directory")

    def listing(self) -> dict[str, int | None]:
        """``uri -> size`` of every input file in the folder now (size None when unknown)."""
        if self._http:
            entries = self._fs.ls(self._root, detail=True)
        else:
            entries = list(self._fs.find(self._root, detail=True, withdirs=False).values())
        files: dict[str, int | None] = {}
        for entry in entries:
            name = entry["name"]
            if entry.get("type", "file") != "file" or not is_input_name(name, self._any_kind):
                continue
            uri = self._fs.unstrip_protocol(name) if self._remote else self._fs.unstrip_protocol(name).removeprefix("file://")
            files[uri] = entry.get("size")
        return dict(sorted(files.items()))

    def settled(self, known: set[str], settle: float, stop: threading.Event | None = None) -> list[str]:
        """New files (not in ``known``) whose size held still for ``settle`` seconds, sorted."""
        first = {uri: size for uri, size in self.listing().items() if uri not in known}
        if not first:
            return []
        if settle > 0:
            if (stop or threading.Event()).wait(settle):
                return []
            second = self.listing()
        else:
            second = first
        return [uri for uri, size in first.items() if uri in second and second[uri] == size and size != 0]
