"""Prompt tags: the syntax, the scores (tiny model, prompts about its shapes and colours) and
the parquet columns they become."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipcrawl.io import parquet
from clipcrawl.pipelines import synthetic_images
from clipcrawl.transforms.clip_handler import ClipScorer
from clipcrawl.transforms.clip_model import TINY_MODEL_NAME
from clipcrawl.transforms.clip_scoring import ClipConfig, ClipScore, apply_clip_score
from clipcrawl.transforms.clip_tags import BUILTIN_TAGS, NEUTRAL_PROMPTS, TagSpec, parse_tags
from clipcrawl.transforms.sample import Sample, sample_key

OTHER_COLOURS = [c for c in synthetic_images.COLOURS if c != "red"]
RED = "red=" + "|".join(synthetic_images.caption_for(s, "red") for s in synthetic_images.SHAPES) + "~" + "|".join(
    synthetic_images.caption_for(s, c) for s in synthetic_images.SHAPES for c in OTHER_COLOURS
)
STAR = "star=" + "|".join(synthetic_images.caption_for("star", c) for c in synthetic_images.COLOURS) + "~" + "|".join(
    synthetic_images.caption_for(s, c) for s in synthetic_images.SHAPES if s != "star" for c in synthetic_images.COLOURS
)


def test_parse_builtins_custom_prompts_and_neutrals() -> None:
    specs = parse_tags(" unsafe ; watermark;red=a red circle|a red star ~ a blue circle ;plain=a photo of text")
    assert [spec.name for spec in specs] == ["unsafe", "watermark", "red", "plain"]
    assert specs[0] == BUILTIN_TAGS["unsafe"]
    assert specs[2] == TagSpec("red", ("a red circle", "a red star"), ("a blue circle",))
    assert specs[3].neutral == NEUTRAL_PROMPTS and specs[3].column == "tag_plain"
    assert parse_tags(None) == parse_tags("") == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nsfw", "unknown tag"),
        ("Bad Name=a cat", "must match"),
        ("red=~a blue circle", "at least one positive"),
        ("red=a red star;red=a red circle", "repeat"),
    ],
)
def test_parse_rejects_bad_tags(value, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tags(value)


def test_tags_rank_matching_images_higher_from_the_same_forward_pass() -> None:
    examples = list(synthetic_images.iter_examples(6262, count=80))
    images = []
    for example in examples:
        buffer = io.BytesIO()
        example.image.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    captions = [example.caption for example in examples]
    config = ClipConfig.from_kwargs(model_name=TINY_MODEL_NAME, device="cpu", tags=f"{RED};{STAR}")
    tagged = ClipScorer(config).score(images, captions)
    plain = ClipScorer(dataclasses.replace(config, tags=())).score(images, captions)
    assert [t.similarity for t in tagged] == [p.similarity for p in plain]  # tags change nothing else
    assert all(set(t.tags) == {"red", "star"} and all(0.0 <= v <= 1.0 for v in t.tags.values()) for t in tagged)
    for name, positive in (("red", [e.colour == "red" for e in examples]), ("star", [e.shape == "star" for e in examples])):
        scores = np.array([t.tags[name] for t in tagged])
        hits, misses = scores[np.array(positive)], scores[~np.array(positive)]
        assert len(hits) >= 8
        auc = (hits[:, None] > misses[None, :]).mean()  # chance would be 0.5
        assert auc > 0.95, (name, auc)
        assert hits.mean() > 0.5 > misses.mean()


def test_tags_go_on_every_scored_row_and_become_float32_columns() -> None:
    def row(ordinal: int) -> Sample:
        return Sample(key=sample_key(1, ordinal), shard_no=1, url="http://x/", caption="a red star", page_url=None,
                      source="s", image=b"jpeg")

    score = ClipScore(similarity=0.5, tags={"red": 0.9, "star": 0.25})
    kept = apply_clip_score(row(0), score, threshold=0.28)
    dropped = apply_clip_score(row(1), dataclasses.replace(score, similarity=0.1), threshold=0.28)
    assert (kept.status, kept.tags) == ("success", score.tags)
    assert (dropped.status, dropped.tags) == ("below_threshold", score.tags)
    unscored = dataclasses.replace(row(2), status="failed_to_download")
    sink = io.BytesIO()
    parquet.write_rows([r.metadata() for r in (kept, dropped, unscored)], sink, tag_names=("red", "star"))
    table = pq.read_table(io.BytesIO(sink.getvalue()))
    assert table.schema.field("tag_red").type == "float"
    assert table.column("tag_red").to_pylist() == pytest.approx([0.9, 0.9, None], nan_ok=True)
    assert table.column("tag_star").to_pylist()[:2] == [0.25, 0.25] and table.column("tag_star")[2].as_py() is None
    assert "tag_red" not in pq.read_table(io.BytesIO(_plain(kept))).column_names


def _plain(sample: Sample) -> bytes:
    sink = io.BytesIO()
    parquet.write_rows([sample.metadata()], sink)
    return sink.getvalue()
