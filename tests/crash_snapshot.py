"""What a dataset directory holds, reduced to what must not change when a run is killed and rerun.

A ``Snapshot`` keeps, per shard, the parquet rows by key (status, decision, image hash,
similarity), the tar members by part, the stats counts and the ledger's row; and every file
that is neither a dataset file nor the ledger (temporary files of a killed writer, strays).
Fetch times and durations differ from run to run and are left out.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import pathlib
import re
import tarfile
from typing import Any

SIMILARITY_TOLERANCE = 1e-4  # batches of another size may round the last float bits differently
_DATASET_FILE = re.compile(r"^\d{6}(?:_\d{2}\.tar|\.parquet|_stats\.json)$")
_LEDGER_FILE = re.compile(r"^clipcrawl\.sqlite(?:-wal|-shm|-journal)?$")
_ROW_FIELDS = ("url", "caption", "status", "error_message", "sha256", "width", "height", "image_format")
_STATS_FIELDS = ("candidates", "status_counts", "images_ok", "kept")
_LEDGER_FIELDS = ("uri", "status", "pairs_extracted", "images_ok", "pairs_kept")


@dataclasses.dataclass
class Snapshot:
    rows: dict[str, dict[str, Any]]  # key -> the row's stable fields, over every parquet
    duplicate_keys: list[str]  # keys that appear in more than one row (any parquet)
    parquets: list[str]  # parquet file names (a shard without candidates has one with no rows)
    tars: dict[str, list[tuple[str, str]]]  # tar file -> (member name, content hash) in order
    duplicate_members: list[str]  # tar members (key.ext) present more than once over all tars
    stats: dict[str, dict[str, Any]]  # stats file -> its stable counts
    ledger: dict[int, dict[str, Any]]  # shard_no -> the ledger's stable fields
    temporary: list[str]  # names a killed writer may leave: hidden, or ending in .tmp
    strays: list[str]  # any other name that is neither a dataset file nor the ledger


def snapshot(output: str | pathlib.Path) -> Snapshot:
    import pyarrow.parquet as pq

    output = pathlib.Path(output)
    names = sorted(path.name for path in output.iterdir())
    parquets = [name for name in names if name.endswith(".parquet") and _DATASET_FILE.match(name)]
    rows: dict[str, dict[str, Any]] = {}
    key_count: collections.Counter[str] = collections.Counter()
    for name in parquets:
        for row in pq.read_table(output / name).to_pylist():
            key_count[row["key"]] += 1
            rows[row["key"]] = {field: row.get(field) for field in _ROW_FIELDS} | {
                "similarity": row.get("similarity"), "parquet": name,
            }
    tars = {name: _tar_members(output / name) for name in names if name.endswith(".tar") and _DATASET_FILE.match(name)}
    member_count = collections.Counter(member for members in tars.values() for member, _ in members)
    stats = {}
    for name in (n for n in names if n.endswith("_stats.json") and _DATASET_FILE.match(n)):
        data = json.loads((output / name).read_text(encoding="utf-8"))
        stats[name] = {field: data.get(field) for field in _STATS_FIELDS}
    return Snapshot(
        rows=rows,
        duplicate_keys=sorted(key for key, count in key_count.items() if count > 1),
        parquets=parquets,
        tars=tars,
        duplicate_members=sorted(member for member, count in member_count.items() if count > 1),
        stats=stats,
        ledger=_ledger(output),
        temporary=[n for n in names if n.startswith(".") or n.endswith(".tmp")],
        strays=[n for n in names if not (n.startswith(".") or n.endswith(".tmp"))
                and not _DATASET_FILE.match(n) and not _LEDGER_FILE.match(n)],
    )


def _tar_members(path: pathlib.Path) -> list[tuple[str, str]]:
    """Members in order with a hash of their bytes; the .json's fetch facts vary, so only its decision counts."""
    members = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isfile() else b""
            if member.name.endswith(".json"):
                meta = json.loads(data)
                data = json.dumps({field: meta.get(field) for field in ("key", "url", "caption", "status", "sha256")},
                                  sort_keys=True).encode("utf-8")
            members.append((member.name, hashlib.sha256(data).hexdigest()[:16]))
    return members


def _ledger(output: pathlib.Path) -> dict[int, dict[str, Any]]:
    from clipcrawl.io.coordinator import Coordinator

    if not (output / "clipcrawl.sqlite").exists():
        return {}
    coordinator = Coordinator(f"sqlite:///{output}/clipcrawl.sqlite")
    try:
        return {row["shard_no"]: {field: row.get(field) for field in _LEDGER_FIELDS} for row in coordinator.shards()}
    finally:
        coordinator.close()


def differences(expected: Snapshot, got: Snapshot, limit: int = 6) -> list[str]:
    """What ``got`` (a crashed-then-rerun dataset) lacks or has beyond ``expected``; empty when equal.

    Also checks ``got`` on its own: no duplicate key, no temporary or stray file, every
    shard done. Long lists are cut to ``limit`` examples.
    """
    problems: list[str] = []

    def add(what: str, items: list[Any]) -> None:
        if items:
            shown = ", ".join(str(item) for item in items[:limit]) + (f", ... ({len(items)})" if len(items) > limit else "")
            problems.append(f"{what}: {shown}")

    add("duplicate keys in parquet", got.duplicate_keys)
    add("duplicate tar members", got.duplicate_members)
    add("missing parquet files", sorted(set(expected.parquets) - set(got.parquets)))
    add("extra parquet files", sorted(set(got.parquets) - set(expected.parquets)))
    add("missing rows", sorted(expected.rows.keys() - got.rows.keys()))
    add("extra rows", sorted(got.rows.keys() - expected.rows.keys()))
    add("rows that differ", [f"{key} {_row_change(expected.rows[key], got.rows[key])}"
                             for key in sorted(expected.rows.keys() & got.rows.keys())
                             if _row_change(expected.rows[key], got.rows[key])])
    add("missing tar files", sorted(expected.tars.keys() - got.tars.keys()))
    add("extra tar files", sorted(got.tars.keys() - expected.tars.keys()))
    add("tars whose members differ", sorted(name for name in expected.tars.keys() & got.tars.keys()
                                            if expected.tars[name] != got.tars[name]))
    add("missing stats files", sorted(expected.stats.keys() - got.stats.keys()))
    add("stats that differ", sorted(name for name in expected.stats.keys() & got.stats.keys()
                                    if expected.stats[name] != got.stats[name]))
    add("shards not done in the ledger", [f"{no}={row['status']}" for no, row in sorted(got.ledger.items())
                                          if row["status"] != "done"])
    add("ledger rows that differ", [no for no in sorted(expected.ledger.keys() | got.ledger.keys())
                                    if expected.ledger.get(no) != got.ledger.get(no)])
    add("temporary files left", got.temporary)
    add("stray files", got.strays)
    return problems


def _row_change(expected: dict[str, Any], got: dict[str, Any]) -> str:
    changed = [f"{field}: {expected[field]!r} -> {got[field]!r}" for field in expected
               if field != "similarity" and expected[field] != got[field]]
    before, after = expected["similarity"], got["similarity"]
    if (before is None) != (after is None) or (before is not None and abs(before - after) > SIMILARITY_TOLERANCE):
        changed.append(f"similarity: {before!r} -> {after!r}")
    return "; ".join(changed)
