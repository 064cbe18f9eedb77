"""Every input kind end to end on the DirectRunner's engine: WAT vs WARC on the same real
page, URL lists in three formats, WebDataset re-scoring, and dedup across shards.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.pipelines import build_dataset
from clipcrawl.pipelines.demo import make_demo_inputs
from clipcrawl.pipelines.image_server import ImageServer
from tests.conftest import DATA

COMMON = [
    "--clip_model=clipcrawl-tiny",
    "--clip_pretrained=",
    "--allow_private_addresses",
    "--image_size=64",
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
]
WARC_2014 = DATA / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.part1.warc.gz"
WAT_2014_GZ = DATA / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz"
EXPECTED_STATUS = {"match": "success", "mismatch": "below_threshold"}


def rows_of(output: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(output, "*.parquet"))):
        rows += pq.read_table(path).to_pylist()
    return rows


def stats_of(output: str) -> list[dict]:
    return [json.loads(open(path).read()) for path in sorted(glob.glob(os.path.join(output, "*_stats.json")))]


def test_the_2014_warc_and_its_genuine_wat_give_the_same_rows(tmp_path) -> None:
    # --max_url_chars=10 ends every candidate before download: this test never leaves the machine.
    results = {}
    for name, path in (("wat", WAT_2014_GZ), ("warc", WARC_2014)):
        output = str(tmp_path / name)
        build_dataset.run([f"--input={path}", f"--output={output}", "--max_url_chars=10", *COMMON])
        results[name] = [(r["key"], r["url"], r["caption"], r["page_url"], r["status"]) for r in rows_of(output)]
    assert results["wat"] == results["warc"]
    assert [row[2] for row in results["warc"]] == ["496", "Previous", "Next", "Creative Commons License"]
    assert {row[4] for row in results["warc"]} == {"filtered_url"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A loopback image server and the demo's links to it (captions that match or not)."""
    with ImageServer({}) as server:
        demo = make_demo_inputs(server, str(tmp_path_factory.mktemp("demo")))
        links = list({(link.url, link.caption): link for link in demo.links if link.expect != "duplicate"}.values())
        yield server, links


def write_url_lists(directory, links) -> list[str]:
    """The links split over a LAION parquet, a DataComp CSV and a JSONL; the first link twice."""
    thirds = [links[0::3], links[1::3], links[2::3]]
    thirds[2] = thirds[2] + [thirds[0][0]]  # the same pair in a later shard: a cross-shard duplicate
    parquet_path = os.path.join(directory, "a-laion.parquet")
    pq.write_table(pa.table({"URL": [l.url for l in thirds[0]], "TEXT": [l.caption for l in thirds[0]],
                             "WIDTH": [None] * len(thirds[0])}), parquet_path)
    csv_path = os.path.join(directory, "b-datacomp.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as sink:
        writer = csv.writer(sink)
        writer.writerow(["uid", "url", "text"])
        writer.writerows([[f"uid{i}", l.url, l.caption] for i, l in enumerate(thirds[1])])
    jsonl_path = os.path.join(directory, "c-more.jsonl")
    with open(jsonl_path, "w", encoding="utf-8") as sink:
        for link in thirds[2]:
            sink.write(json.dumps({"url": link.url, "text": link.caption, "page_url": "http://example.org/p"}) + "\n")
    return [parquet_path, csv_path, jsonl_path]


def test_url_lists_download_score_and_dedup_across_shards(served, tmp_path) -> None:
    server, links = served
    inputs = write_url_lists(tmp_path, links)
    output = str(tmp_path / "dataset")
    summary = build_dataset.run([*(f"--input={p}" for p in inputs), f"--output={output}", *COMMON])
    assert summary.ledger["shards"]["done"] == 3
    rows = rows_of(output)
    assert len(rows) == len(links) + 1
    duplicate_link = links[0]
    copies = sorted((r for r in rows if (r["url"], r["caption"]) == (duplicate_link.url, duplicate_link.caption)),
                    key=lambda r: r["key"])
    assert [r["status"] for r in copies][1:] == ["duplicate"]
    assert copies[1]["error_message"] == f"same url and caption as {copies[0]['key']}"
    assert copies[0]["source"].endswith("a-laion.parquet") and copies[1]["source"].endswith("c-more.jsonl")
    for link in links:
        (row,) = [r for r in rows if (r["url"], r["caption"]) == (link.url, link.caption) and r["status"] != "duplicate"]
        assert row["status"] == EXPECTED_STATUS.get(link.expect, link.expect), (link, row)
    assert {r["page_url"] for r in rows if r["source"].endswith(".jsonl")} == {"http://example.org/p"}
    assert {r["page_url"] for r in rows if not r["source"].endswith(".jsonl")} == {None}
    # Three-word English captions: fastText gets most right; the score says how sure it is.
    languages = [r["language"] for r in rows if r["status"] == "success"]
    assert None not in languages and languages.count("en") > len(languages) / 2
    assert all(0 < r["language_score"] <= 1 for r in rows if r["language"])
    assert all(stats["read"]["records"] == stats["candidates"] for stats in stats_of(output))


def test_webdataset_tars_are_rescored_without_downloading(served, tmp_path) -> None:
    server, links = served
    inputs = write_url_lists(tmp_path, links)
    first = str(tmp_path / "first")
    build_dataset.run([f"--input={inputs[0]}", f"--output={first}", *COMMON])
    kept = {r["key"]: r for r in rows_of(first) if r["status"] == "success"}
    assert kept
    requests_before = len(server.seen)

    # Re-filter the kept samples with a stricter threshold; the tiny model gives the same scores.
    scores = sorted(r["similarity"] for r in kept.values())
    threshold = scores[len(scores) // 2]
    second = str(tmp_path / "second")
    build_dataset.run([f"--input={first}/*.tar", f"--output={second}", f"--clip_threshold={threshold}", *COMMON])
    assert len(server.seen) == requests_before  # nothing was fetched again
    rows = rows_of(second)
    assert sorted(r["source_key"] for r in rows) == sorted(kept)
    for row in rows:
        original = kept[row["source_key"]]
        assert row["url"] == original["url"] and row["caption"] == original["caption"]
        assert row["similarity"] == pytest.approx(original["similarity"], abs=1e-5)
        assert row["status"] == ("success" if row["similarity"] >= threshold else "below_threshold")
        assert row["sha256"] == original["sha256"]
    assert {r["status"] for r in rows} == {"success", "below_threshold"}


def test_an_unreadable_input_fails_only_its_shard(served, tmp_path) -> None:
    server, links = served
    good = write_url_lists(tmp_path, links)[0]
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar at all" * 100)
    output = str(tmp_path / "dataset")
    summary = build_dataset.run([f"--input={good}", f"--input={broken}", f"--output={output}", *COMMON])
    assert summary.ledger["shards"]["done"] == 1 and summary.ledger["shards"]["failed"] == 1


def test_a_missing_caption_column_is_a_failed_shard_naming_the_option(tmp_path) -> None:
    path = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"link": ["http://a.example/x.jpg"], "words": ["a red square"]}), path)
    output = str(tmp_path / "dataset")
    summary = build_dataset.run([f"--input={path}", f"--output={output}", *COMMON])
    assert summary.ledger["shards"]["failed"] == 1
    from clipcrawl.io.coordinator import Coordinator

    (shard,) = Coordinator(f"sqlite:///{output}/clipcrawl.sqlite").shards()
    assert "--url_column" in shard["error"]
    renamed = build_dataset.run([f"--input={path}", f"--output={output}", "--url_column=link", "--caption_column=words",
                                 "--max_url_chars=5", "--force", *COMMON])
    assert renamed.ledger["shards"]["done"] == 1
    assert [(r["url"], r["status"]) for r in rows_of(output)] == [("http://a.example/x.jpg", "filtered_url")]


def test_bad_records_are_counted_in_the_shard_stats(tmp_path) -> None:
    data = WAT_2014_GZ.read_bytes()
    cut = tmp_path / "cut.warc.wat.gz"
    cut.write_bytes(data[:-200])  # the final record loses its end
    output = str(tmp_path / "dataset")
    summary = build_dataset.run([f"--input={cut}", f"--output={output}", "--max_url_chars=10", *COMMON])
    assert summary.ledger["shards"]["done"] == 1
    (stats,) = stats_of(output)
    assert stats["read"]["bad_records"] == {"truncated": 1}
    assert "truncated" in stats["read"]["bad_record_examples"][0]
    assert stats["candidates"] == 4  # the four pairs come before the cut


def test_input_format_is_validated() -> None:
    from clipcrawl.pipelines.options import OptionsError, resolve_config
    from apache_beam.options.pipeline_options import PipelineOptions

    with pytest.raises(SystemExit):
        resolve_config(PipelineOptions(["--input=x", "--output=y", "--input_format=pdf"]))
    config = resolve_config(PipelineOptions(["--input=x", "--output=/tmp/y", "--exclude_extensions=svg, bmp",
                                             "--dedup=url", "--dedup_scope=shard", "--no_language"]))
    assert config.filters.exclude_extensions == ("svg", "bmp")
    assert dataclasses.astuple(config.dedup) == ("url", "shard")
    assert config.filters.detect_language is False
    with pytest.raises(OptionsError, match="exclude_extensions"):
        resolve_config(PipelineOptions(["--input=x", "--output=/tmp/y", "--exclude_extensions=a/b"]))
