"""``clipcrawl report``: the data it gathers, the page it writes, on local disk and on S3, in Chromium.

Most tests read a small output written by the real shard writer from hand-made rows (every
kind of status, three hosts, previews); the last ones run the demo pipeline and open its
report in headless Chromium, as a person would.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil

import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipcrawl.io.shard_writer import WriterConfig, write_shard
from clipcrawl.pipelines import report
from clipcrawl.pipelines.report_data import (
    RowTotals,
    ShardInfo,
    gather,
    resolve_threshold,
)
from clipcrawl.pipelines.report_html import render
from clipcrawl.transforms.clip_scoring import apply_score
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.status import Status
from tests.s3_server import s3_endpoint

XSS = "<script>alert('caption')</script> a red square"
PLOTS = ("funnel", "statuses", "similarity", "captions", "languages", "sizes", "fetch", "shards")


def png(colour: tuple[int, int, int], size: tuple[int, int] = (200, 150)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def candidate(shard: int, ordinal: int, host: str, caption: str, language: str = "en") -> Sample:
    return Sample(
        sample_key(shard, ordinal), shard, f"http://{host}/img/{ordinal}.png", caption,
        f"http://{host}/page.html", f"/crawl/crawl-{shard:02d}.warc.wat.gz", language=language, language_score=0.9,
    )  # fmt: skip


def downloaded(sample: Sample, size: tuple[int, int], colour: tuple[int, int, int]) -> Sample:
    sample.image, sample.image_format, sample.sha256 = png(colour, size), "png", "0" * 64
    sample.width, sample.height = size
    sample.original_width, sample.original_height = size[0] * 2, size[1] * 2
    sample.http_status, sample.fetch_time, sample.fetch_seconds = 200, 1_700_000_000.0 + int(sample.key) % 50, 0.05
    sample.downloaded_bytes = 5000
    return sample


def failed(sample: Sample, status: Status, message: str, http_status: int | None = None) -> Sample:
    sample.http_status, sample.fetch_seconds = http_status, 0.2 if http_status else None
    return sample.reject(status, message)


def shard_rows(shard: int) -> list[Sample]:
    """Kept, rejected (with previews in shard 0), and failed rows from three hosts."""
    rows, n = [], 0

    def next_candidate(host: str, caption: str, language: str = "en") -> Sample:
        nonlocal n
        n += 1
        return candidate(shard, n, host, caption, language)

    for i in range(6 if shard == 0 else 3):
        caption = XSS if (shard, i) == (0, 0) else f"a kept picture number {i}"
        sample = downloaded(next_candidate("good.example", caption, "de" if i % 3 else "en"), (180 + 20 * i, 140), (40 * i, 120, 60))
        rows.append(apply_score(sample, 0.30 + 0.02 * i, threshold=0.28))
    for i in range(4 if shard == 0 else 2):
        sample = downloaded(next_candidate("good.example", f"a caption for another picture {i}"), (120, 120), (10, 10, 200))
        rows.append(apply_score(sample, 0.05 + 0.05 * i, threshold=0.28, preview_rate=1.0 if shard == 0 else 0.0))
    rows += [failed(next_candidate("bad.example", f"a missing picture {i}"), Status.FAILED_TO_DOWNLOAD, "HTTP 404", 404)
             for i in range(3 if shard == 0 else 0)]  # fmt: skip
    if shard == 0:
        rows.append(failed(next_candidate("slow.example", "slow"), Status.FAILED_TO_DOWNLOAD, "ReadTimeout: read timed out"))
        rows += [failed(next_candidate("private.example", "robots"), Status.DISALLOWED_ROBOTS, "robots.txt disallows clipcrawl")
                 for _ in range(2)]  # fmt: skip
        rows.append(failed(next_candidate("good.example", "pic"), Status.FILTERED_TEXT, "caption has 3 characters, fewer than 5"))
        rows.append(failed(next_candidate("good.example", "a duplicate", "fr"), Status.DUPLICATE, "same url and caption as x"))
    else:
        rows += [failed(next_candidate("bad.example", "html page"), Status.FAILED_TO_DECODE, "cannot identify image file", 200)
                 for _ in range(2)]  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> str:
    """Three shards written by the real writer: 0 and 1 with rows, 2 empty (no tar)."""
    root = str(tmp_path_factory.mktemp("report") / "dataset")
    config = WriterConfig(output_dir=root, coordinator_url="sqlite://", samples_per_part=4)
    read = {"records": 9, "non_http_links": 1, "bad_records": {"truncated": 1}, "bad_record_examples": ["cut at 123"]}
    for shard in range(3):
        write_shard(config, shard, f"/crawl/crawl-{shard:02d}.warc.wat.gz", shard_rows(shard) if shard < 2 else [], read)
    return root


def decoded_svg(uri: str) -> str:
    assert uri.startswith("data:image/svg+xml;base64,")
    return base64.b64decode(uri.split(",", 1)[1]).decode("utf-8")


def test_gather_counts_statuses_hosts_threshold_and_samples(output) -> None:
    data = gather(output)
    expected = {"success": 9, "below_threshold": 6, "failed_to_download": 4, "disallowed_robots": 2,
                "failed_to_decode": 2, "filtered_text": 1, "duplicate": 1}  # fmt: skip
    assert {status: n for status, n in data.status_counts.items() if n} == expected
    assert data.candidates == 25 and data.problems == []
    assert data.threshold == 0.28 and "below_threshold rows" in data.threshold_note
    assert [(s.shard_no, s.candidates, s.kept, s.tar_parts) for s in data.shards] == [(0, 18, 6, 2), (1, 7, 3, 1), (2, 0, 0, 0)]
    assert data.shards[0].thresholds == (0.28,) and data.shards[0].kept_rate == pytest.approx(6 / 18)
    assert data.error_kinds["failed_to_download"] == {"HTTP 404": 3, "ReadTimeout": 1}
    # A CLIP rejection (or a filtered caption) is a decision, not an error: its reason stays with its status.
    assert set(data.error_kinds) == {"failed_to_download", "failed_to_decode", "disallowed_robots"}
    assert data.reasons["below_threshold"] == {"similarity N < threshold N": 6} and "filtered_text" in data.reasons
    assert {status for status, _ in data.rows.examples} == {"failed_to_download", "failed_to_decode", "disallowed_robots"}
    assert data.http_status_counts == {"200": 17, "404": 3}
    assert data.read["bad_records"] == {"truncated": 3} and data.read["records"] == 27
    # Hosts: bad.example failed 3 downloads and 2 decodes; good.example never failed.
    hosts = data.rows.host_failures
    assert hosts[("bad.example", "failed_to_download")] == 3 and hosts[("bad.example", "failed_to_decode")] == 2
    assert hosts[("private.example", "disallowed_robots")] == 2 and not any(h == "good.example" for h, _ in hosts)
    assert data.rows.languages == {"en": 18, "de": 6, "fr": 1} and data.rows.languages_kept == {"en": 3, "de": 6}
    assert data.rows.similarity_kept.sum() == 9 and data.rows.similarity_rejected.sum() == 6
    assert data.rows.sizes.sum() == 15 and data.rows.max_rejected == pytest.approx(0.20)
    assert ("failed_to_download", "HTTP 404") in data.rows.examples
    # The grid: every kept sample (both shards' first tar parts) and the four previews of shard 0.
    assert len(data.kept_grid) == 4 + 3  # first part of each shard holds at most 4 samples
    assert [image.similarity for image in data.kept_grid] == sorted(image.similarity for image in data.kept_grid)
    assert len(data.rejected_grid) == 4 and all(image.status == "below_threshold" for image in data.rejected_grid)
    for image in data.kept_grid + data.rejected_grid:
        with Image.open(io.BytesIO(image.jpeg)) as picture:
            picture.load()
            assert picture.format == "JPEG" and max(picture.size) <= 160


def section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}">')
    return page[start : page.index("</section>", start)]


def test_below_threshold_is_a_rejection_not_an_error_kind(output) -> None:
    page = render(gather(output))
    failures = section(page, "failures")
    assert "HTTP 404" in failures and "cannot identify image file" in failures
    assert "below_threshold" not in failures and "threshold N" not in failures and "filtered_text" not in failures
    # It belongs in the status counts, the similarity histogram and the rejected grid.
    assert re.search(r">below_threshold</span></td>\s*<td class=\"n\">6</td>", section(page, "why"))
    similarity = re.search(r'id="plot-similarity"><figcaption>[^<]*</figcaption><img src="([^"]+)"', page).group(1)
    assert "below threshold (6)" in decoded_svg(similarity)
    rejected = section(page, "samples").split('<div class="grid rejected">', 1)[1]
    assert rejected.count("<figure>") == 4


def test_threshold_comes_from_the_flag_then_stats_then_rows_then_the_gap() -> None:
    shard = ShardInfo(0, thresholds=(0.3,))
    totals = RowTotals(max_rejected=0.21, min_kept=0.33)
    assert resolve_threshold(0.25, [{"clip_threshold": 0.4}], [shard], totals) == (0.25, "given with --threshold")
    assert resolve_threshold(None, [{"clip_threshold": 0.4}], [shard], totals)[0] == 0.4
    value, note = resolve_threshold(None, [{}], [shard, ShardInfo(1, thresholds=(0.3,)), ShardInfo(2, thresholds=(0.32,))], totals)
    assert value == 0.3 and "0.32" in note  # most shards used 0.3; the odd one is named
    value, note = resolve_threshold(None, [{}], [ShardInfo(0)], totals)
    assert value == 0.33 and "inferred" in note and "0.210" in note
    assert resolve_threshold(None, [], [], RowTotals()) == (None, "unknown: no scored samples")


def test_page_is_self_contained_escaped_and_marks_the_threshold(output) -> None:
    page = render(gather(output))
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "<script" not in page  # the caption's markup is escaped, and the page has no script of its own
    assert "&lt;script&gt;alert(" in page
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert sources and all(src.startswith("data:image/") for src in sources)
    assert not re.search(r"""(?:src|href)=["'](?!data:|#|http://(?:good|bad|slow|private)\.example/)""", page)
    for name in PLOTS:
        assert f'id="plot-{name}"' in page
    similarity = re.search(r'id="plot-similarity"><figcaption>[^<]*</figcaption><img src="([^"]+)"', page).group(1)
    assert "threshold 0.28" in decoded_svg(similarity)  # the line's label, as SVG text
    for text in ("bad.example", "HTTP 404", "ReadTimeout", "robots.txt disallows", "crawl-01.warc.wat.gz", "truncated"):
        assert text in page


def test_command_writes_the_report_and_reports_bad_use(output, tmp_path, capsys) -> None:
    assert report.main([output]) == 0
    with open(os.path.join(output, "report.html"), encoding="utf-8") as handle:
        page = handle.read()
    assert page.startswith("<!DOCTYPE html>") and "candidates 25, kept 9 (36.0%)" in capsys.readouterr().out
    target = tmp_path / "elsewhere" / "r.html"
    assert report.main([output, f"--out={target}", "--grid=0", "--max_shards=1", "--threshold=0.3"]) == 0
    small = target.read_text(encoding="utf-8")
    assert "no kept samples" in small and "given with --threshold" in small
    assert "rows read from 1 of 3 shards" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty)]) == 2
    assert "no shard outputs" in capsys.readouterr().err


def test_report_of_an_output_on_s3(output, monkeypatch, tmp_path) -> None:
    import fsspec

    with s3_endpoint(monkeypatch) as root:
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        remote = f"{root}/runs/dataset"
        for name in os.listdir(output):
            if name != "report.html":
                fs.put_file(os.path.join(output, name), f"{remote}/{name}")
        local_out = tmp_path / "from-s3.html"
        assert report.main([remote, f"--out={local_out}"]) == 0
        assert report.main([remote]) == 0  # default: next to the data, on S3
        on_s3 = fs.cat_file(f"{remote}/report.html").decode("utf-8")
        from_s3, local = gather(remote), gather(output)
    assert from_s3.status_counts == local.status_counts and from_s3.threshold == local.threshold
    assert [i.key for i in from_s3.kept_grid + from_s3.rejected_grid] == [i.key for i in local.kept_grid + local.rejected_grid]
    assert [s.download_span for s in from_s3.shards] == [s.download_span for s in local.shards]
    page = local_out.read_text(encoding="utf-8")
    assert remote in page and len(re.findall(r'<img src="data:image/jpeg', page)) == 11 and on_s3.count("<figure") == page.count("<figure")


# --- The demo pipeline's real output, opened in headless Chromium ----------------------------


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory) -> str:
    from clipcrawl.pipelines.demo import run_demo

    root = str(tmp_path_factory.mktemp("demo"))
    summary = run_demo(root, ["--preview_rate=1"])
    assert summary.ledger["shards"]["failed"] == 0
    return os.path.join(root, "dataset")


def test_demo_run_keeps_previews_of_every_rejected_image(demo_output) -> None:
    import webdataset

    rows = []
    for name in sorted(os.listdir(demo_output)):
        if name.endswith(".parquet"):
            rows += pq.read_table(os.path.join(demo_output, name)).to_pylist()
    rejected = [row for row in rows if row["status"] == "below_threshold"]
    assert len(rejected) == 8 and all(row["preview"] for row in rejected)
    assert all(row["preview"] is None for row in rows if row["status"] != "below_threshold")
    for row in rejected:
        with Image.open(io.BytesIO(row["preview"])) as image:
            assert image.format == "JPEG" and max(image.size) <= 128
    tars = sorted(os.path.join(demo_output, name) for name in os.listdir(demo_output) if name.endswith(".tar"))
    for sample in webdataset.WebDataset(tars, shardshuffle=False):
        assert "preview" not in json.loads(sample["json"])


def chromium_driver(chromium: str, chromedriver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never looks for (or downloads) a driver.
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


def chromium_paths() -> tuple[str, str]:
    """Chromium and its driver; without them a skip locally, but a failure in CI (which installs them)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        missing = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI is set, where a skip would hide that the report was never opened")
        pytest.skip(missing)
    return chromium, chromedriver


def test_missing_chromium_skips_locally_and_fails_in_ci(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        chromium_paths()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        chromium_paths()


def test_demo_report_renders_in_headless_chromium(demo_output, tmp_path) -> None:
    chromium, chromedriver = chromium_paths()
    page = tmp_path / "report.html"
    assert report.main([demo_output, f"--out={page}"]) == 0
    data = gather(demo_output)
    driver = chromium_driver(chromium, chromedriver)
    try:
        driver.get(page.as_uri())
        plots = driver.execute_script(
            "return Array.from(document.querySelectorAll('figure.plot')).map(f => {"
            " const img = f.querySelector('img'), box = img.getBoundingClientRect();"
            " return [f.id, img.complete, img.naturalWidth, box.width, box.height]; })"
        )
        grid = driver.execute_script(
            "return Array.from(document.querySelectorAll('.grid img')).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        tables = driver.execute_script("return document.querySelectorAll('table tr').length")
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(height + 150, 16000))
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
        console = driver.get_log("browser")
    finally:
        driver.quit()
    assert [name for name, *_ in plots] == [f"plot-{name}" for name in PLOTS]
    for name, complete, natural_width, width, height in plots:
        assert complete and natural_width > 0 and width > 200 and height > 100, name
    assert len(grid) == len(data.kept_grid) + len(data.rejected_grid) == 16 + 8
    assert all(complete and width > 0 and height > 0 for complete, width, height in grid)
    assert tables > 20 and fetched == []  # nothing loaded from anywhere: everything is inline
    assert [entry for entry in console if entry["level"] == "SEVERE"] == []
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size[0] >= 1000 and image.size[1] > 2000
        assert len(image.convert("RGB").getcolors(1 << 20) or ()) > 500  # charts and photos, not a blank page
    assert shot.stat().st_size > 100_000
