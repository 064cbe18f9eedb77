"""``clipcrawl export --laion``: LAION's column names over the shard parquets, local and on S3."""

from __future__ import annotations

import pathlib
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.io import parquet
from clipcrawl.pipelines import cli, export
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.status import Status
from tests.s3_server import s3_endpoint

LAION = ["URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "LANGUAGE"]


def sample(shard_no: int, ordinal: int, status: Status, **fields: Any) -> Sample:
    downloaded = status in (Status.SUCCESS, Status.BELOW_THRESHOLD)
    values: dict[str, Any] = dict(
        key=sample_key(shard_no, ordinal),
        shard_no=shard_no,
        url=f"https://example.org/{shard_no}/{ordinal}.jpg",
        caption=f"picture {ordinal} of shard {shard_no}",
        page_url="https://example.org/page.html",
        source=f"s3://commoncrawl/{shard_no}.warc.wat.gz",
        language="en" if ordinal % 2 else "de",
        status=status.value,
        width=256 if downloaded else None,
        height=256 if downloaded else None,
        original_width=640 + ordinal if downloaded else None,
        original_height=480 + ordinal if downloaded else None,
        similarity=0.31 + ordinal / 100 if downloaded else None,
    )
    values.update(fields)
    return Sample(**values)


SHARDS = {
    0: [sample(0, 0, Status.SUCCESS), sample(0, 1, Status.BELOW_THRESHOLD, similarity=0.1),
        sample(0, 2, Status.DUPLICATE), sample(0, 3, Status.SUCCESS)],
    1: [],  # a shard with no candidates still has a parquet
    2: [sample(2, 0, Status.FAILED_TO_DOWNLOAD, error_message="HTTP 404"), sample(2, 5, Status.SUCCESS, language=None)],
}


def write_dataset(root: pathlib.Path, extra_columns: dict[int, dict[str, list]] | None = None) -> pathlib.Path:
    """Shard parquets as the writer makes them, plus files an export must not read."""
    root.mkdir(parents=True, exist_ok=True)
    for shard_no, samples in SHARDS.items():
        table = parquet.rows_to_table([s.metadata() for s in samples])
        for name, values in (extra_columns or {}).get(shard_no, {}).items():
            table = table.append_column(name, pa.array(values, pa.float32()))
        pq.write_table(table, root / f"{shard_no:06d}.parquet")
    # A staged file of an unfinished write, a stats file, and an earlier export: all ignored.
    pq.write_table(parquet.rows_to_table([sample(9, 0, Status.SUCCESS).metadata()]), root / ".000009.parquet.abc.tmp")
    (root / "000000_stats.json").write_text("{}")
    pq.write_table(pa.table({"URL": ["x"]}), root / "laion.parquet")
    return root


def kept() -> list[Sample]:
    return [s for shard_no in sorted(SHARDS) for s in SHARDS[shard_no] if s.status == Status.SUCCESS]


def test_default_export_is_the_kept_rows_with_laions_names(tmp_path: pathlib.Path) -> None:
    dataset = write_dataset(tmp_path / "out")
    summary = export.export_laion(str(dataset), str(tmp_path / "laion.parquet"))
    table = pq.read_table(tmp_path / "laion.parquet")
    assert table.column_names == LAION + ["key", "status"] == list(summary.columns)
    assert (summary.shards, summary.candidates, summary.rows) == (3, 6, 3)
    assert table.to_pylist() == [
        {"URL": s.url, "TEXT": s.caption, "WIDTH": s.original_width, "HEIGHT": s.original_height,
         "similarity": pytest.approx(s.similarity), "LANGUAGE": s.language, "key": s.key, "status": "success"}
        for s in kept()
    ]
    assert table.schema.field("WIDTH").type == pa.int32() and table.schema.field("similarity").type == pa.float64()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # committed by rename


@pytest.mark.parametrize(
    ("status", "expected"),
    [("all", 6), ("below_threshold,duplicate", 2), ("failed_to_download", 1), ("success", 3)],
)
def test_status_selects_rows(tmp_path: pathlib.Path, status: str, expected: int) -> None:
    dataset = write_dataset(tmp_path / "out")
    export.export_laion(str(dataset), str(tmp_path / "x.parquet"), export.parse_statuses(status))
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.num_rows == expected
    if status != "all":
        assert set(table["status"].to_pylist()) == set(status.split(","))


def test_tag_scores_become_punsafe_and_pwatermark_where_a_shard_has_them(tmp_path: pathlib.Path) -> None:
    scores = {0: {"tag_nsfw": [0.9, 0.2, 0.0, 0.05], "tag_watermark": [0.1, 0.3, 0.0, 0.7]}}
    dataset = write_dataset(tmp_path / "out", extra_columns=scores)
    export.export_laion(str(dataset), str(tmp_path / "laion.parquet"))
    table = pq.read_table(tmp_path / "laion.parquet")
    assert table.column_names == LAION + ["punsafe", "pwatermark", "key", "status"]
    # Kept rows: shard 0's ordinals 0 and 3, then shard 2's, which has no tag scores (null).
    assert table["punsafe"].to_pylist() == [pytest.approx(0.9), pytest.approx(0.05), None]
    assert table["pwatermark"].to_pylist() == [pytest.approx(0.1), pytest.approx(0.7), None]


def test_without_tag_columns_there_is_no_punsafe(tmp_path: pathlib.Path) -> None:
    dataset = write_dataset(tmp_path / "out")
    export.export_laion(str(dataset), str(tmp_path / "laion.parquet"))
    assert "punsafe" not in pq.read_schema(tmp_path / "laion.parquet").names


def test_command_line(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = write_dataset(tmp_path / "out")
    destination = tmp_path / "sub" / "laion.parquet"
    assert cli.main(["export", str(dataset), "--laion", str(destination)]) == 0
    assert "exported 3 of 6 rows (3 shards)" in capsys.readouterr().out
    assert pq.read_table(destination).num_rows == 3
    assert cli.main(["export", str(dataset), "--laion", str(destination), "--status", "sucess"]) == 2
    assert "unknown status sucess" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "empty"), "--laion", str(destination)]) == 2
    assert "no shard parquet files" in capsys.readouterr().err
    assert pq.read_table(destination).num_rows == 3  # a failed export leaves the last one alone


def test_export_reads_and_writes_s3(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = write_dataset(tmp_path / "out")
    export.export_laion(str(dataset), str(tmp_path / "local.parquet"))
    with s3_endpoint(monkeypatch) as bucket:
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.put(str(dataset) + "/", f"{bucket}/dataset/", recursive=True)
        summary = export.export_laion(f"{bucket}/dataset", f"{bucket}/exports/laion.parquet")
        assert (summary.shards, summary.rows) == (3, 3)
        assert fs.ls(f"{bucket}/exports", detail=False) == [f"{bucket.removeprefix('s3://')}/exports/laion.parquet"]
        with fs.open(f"{bucket}/exports/laion.parquet", "rb") as source:
            remote = pq.read_table(source)
    assert remote.equals(pq.read_table(tmp_path / "local.parquet"))
