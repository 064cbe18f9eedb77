"""Previews of rejected images: a deterministic fraction of below_threshold rows keeps a small JPEG.

The preview lands in the parquet's ``preview`` column only, never in a tar's ``.json``.
"""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from clipcrawl.io.shard_writer import WriterConfig, write_shard
from clipcrawl.pipelines.options import OptionsError, resolve_config
from clipcrawl.transforms.clip_scoring import ClipConfig, Undecodable, apply_score
from clipcrawl.transforms.previews import (
    DEFAULT_PREVIEW_RATE,
    PREVIEW_MAX_SIDE,
    make_preview,
    wants_preview,
)
from clipcrawl.transforms.sample import Sample, sample_key


def picture(size: tuple[int, int] = (256, 192), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    image = Image.new(mode, size, (200, 40, 40, 128) if mode == "RGBA" else (200, 40, 40))
    for x in range(0, size[0], 7):  # some detail, so the JPEG is not trivially small
        for y in range(0, size[1], 5):
            image.putpixel((x, y), (x % 256, y % 256, 90, 255) if mode == "RGBA" else (x % 256, y % 256, 90))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def scored_sample(ordinal: int, image: bytes | None = None) -> Sample:
    return Sample(
        sample_key(7, ordinal), 7, f"http://img.example/{ordinal}.png", f"caption {ordinal}",
        "http://img.example/", "in.wat.gz", image=image if image is not None else picture(),
        image_format="png", width=256, height=192, sha256="0" * 64,
    )  # fmt: skip


def test_choice_depends_only_on_the_key_and_matches_the_rate() -> None:
    keys = [sample_key(3, i) for i in range(4000)]
    chosen = [key for key in keys if wants_preview(key, 0.125)]
    assert chosen == [key for key in keys if wants_preview(key, 0.125)]  # same answer every time
    assert 400 <= len(chosen) <= 600  # 1 in 8 of 4000 = 500
    # A larger rate keeps every row the smaller one kept (the hash is compared to the rate).
    assert set(chosen) <= {key for key in keys if wants_preview(key, 0.5)}
    assert not any(wants_preview(key, 0.0) for key in keys)
    assert all(wants_preview(key, 1.0) for key in keys)
    default = sum(wants_preview(key, DEFAULT_PREVIEW_RATE) for key in keys)
    assert 30 <= default <= 100  # 1 in 64 of 4000 = 62.5


def test_preview_is_a_small_decodable_jpeg() -> None:
    original = picture((400, 300))
    preview = make_preview(original)
    assert preview is not None and preview[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(preview)) as image:
        image.load()
        assert image.format == "JPEG" and max(image.size) == PREVIEW_MAX_SIDE and image.size == (128, 96)
    assert len(preview) < len(original) and len(preview) < 12_000
    # Transparency goes on white (JPEG has no alpha), small images are not enlarged.
    with Image.open(io.BytesIO(make_preview(picture((40, 30), mode="RGBA")))) as image:
        assert image.size == (40, 30) and image.mode == "RGB"
        assert image.getpixel((1, 1))[1] > 100  # half-transparent red on white, not on black
    assert make_preview(b"<html>not an image</html>") is None
    assert make_preview(None) is None


def test_apply_score_keeps_a_preview_only_for_chosen_rejected_rows() -> None:
    samples = [scored_sample(i) for i in range(64)]
    rejected = [apply_score(sample, 0.1, threshold=0.28, preview_rate=0.25) for sample in samples]
    assert all(row.status == "below_threshold" and row.image is None for row in rejected)
    with_preview = [row for row in rejected if row.preview is not None]
    assert {row.key for row in with_preview} == {s.key for s in samples if wants_preview(s.key, 0.25)}
    assert 0 < len(with_preview) < len(samples)
    for row in with_preview:
        with Image.open(io.BytesIO(row.preview)) as image:
            assert image.format == "JPEG" and max(image.size) <= PREVIEW_MAX_SIDE
    # Kept rows keep their image and get no preview; rate 0 keeps none; undecodable rows none.
    kept = apply_score(samples[0], 0.9, threshold=0.28, preview_rate=1.0)
    assert kept.status == "success" and kept.preview is None and kept.image is not None
    assert all(apply_score(s, 0.1, 0.28, preview_rate=0.0).preview is None for s in samples)
    broken = apply_score(samples[0], Undecodable("bad"), 0.28, preview_rate=1.0)
    assert broken.status == "failed_to_decode" and broken.preview is None


def test_preview_goes_to_the_parquet_column_never_to_the_tar_json(tmp_path) -> None:
    rejected = apply_score(scored_sample(0), 0.1, threshold=0.28, preview_rate=1.0)
    plain = apply_score(scored_sample(1), 0.1, threshold=0.28, preview_rate=0.0)
    # A kept row that (by some future path) carries a preview must still not put it in the json.
    kept = apply_score(scored_sample(2), 0.9, threshold=0.28)
    kept.preview = b"\xff\xd8\xffnot-for-json"
    config = WriterConfig(output_dir=str(tmp_path), coordinator_url="sqlite://")
    write_shard(config, 7, "in.wat.gz", [rejected, plain, kept])
    table = pq.read_table(tmp_path / "000007.parquet")
    assert table.schema.field("preview").type == "binary" and table.schema.field("preview").nullable
    previews = dict(zip(table.column("key").to_pylist(), table.column("preview").to_pylist()))
    assert previews[rejected.key] == rejected.preview and previews[plain.key] is None
    with tarfile.open(tmp_path / "000007_00.tar") as tar:
        meta = json.loads(tar.extractfile(f"{kept.key}.json").read())
    assert "preview" not in meta and "image" not in meta and meta["key"] == kept.key


def test_preview_rate_option_and_its_bounds() -> None:
    def clip(*flags: str) -> ClipConfig:
        return resolve_config(PipelineOptions(["--input=x.wat", "--output=/tmp/o", *flags])).clip

    assert clip().preview_rate == DEFAULT_PREVIEW_RATE
    assert clip("--preview_rate=0").preview_rate == 0.0
    assert clip("--preview_rate=1").preview_rate == 1.0
    with pytest.raises(OptionsError, match="preview_rate"):
        clip("--preview_rate=1.5")
    with pytest.raises(ValueError, match="preview_rate"):
        ClipConfig(preview_rate=-0.1)
