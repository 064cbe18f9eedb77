"""``--save_embeddings``: per-shard float16 .npy files whose rows follow the parquet's kept keys.

The real pipeline runs on the offline demo inputs (two shards with pictures, one WAT without
any) with the tiny CLIP, in scoring batches of 5 split into forward passes of 2, so rows cross
batch and chunk boundaries (text is encoded in length-sorted chunks and put back). Alignment
is proven from outside the pipeline: open_clip recomputes each kept row's embeddings from the
image bytes in the tar and the caption (row i belongs to key i), and every row's image.text
equals its parquet similarity (the two files pair up; kept demo rows all score ~0.999, so this
check alone would not notice both files shifted together). Reruns over a finished output
must leave files that match the new parquet.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import shutil
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipcrawl.io import embeddings
from clipcrawl.io.shard_writer import WriterConfig, write_shard
from clipcrawl.pipelines import build_dataset
from clipcrawl.pipelines.demo import demo_args, make_demo_inputs
from clipcrawl.pipelines.image_server import ImageServer
from clipcrawl.transforms.clip_model import TINY_MODEL_NAME
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.status import Status
from tests.conftest import output_fingerprint

DIM = 64  # the tiny model's embed_dim
SHARDS = (0, 1, 2)  # demo: two shards with pictures, shard 2 has no image at all
NORM_TOLERANCE = 2e-3  # an L2-normalized float16 row: each element rounded by <= 2**-11 relative
ROW_TOLERANCE = 1e-3  # float16 rounding of values in [-1, 1] is <= 2**-12; open_clip recomputation ~1e-6
DOT_TOLERANCE = 2e-3  # image.text of two float16 rows vs the float32 similarity
# Batches and chunks smaller than a shard: a row order bug between them would show.
BATCHING = ["--clip_batch_size=5", "--clip_micro_batch_size=2"]


def run_pipeline(input_dir: str, output: str, *extra: str, force: bool = False) -> build_dataset.RunSummary:
    args = [arg for arg in demo_args(input_dir, output) if force or arg != "--force"]
    return build_dataset.run(args + BATCHING + list(extra))


def kept_rows(output: str, shard: int) -> list[dict]:
    """The shard's ``success`` rows in parquet order (the writer sorts by key)."""
    columns = ["key", "status", "caption", "similarity"]
    table = pq.read_table(os.path.join(output, f"{shard:06d}.parquet"), columns=columns)
    return [row for row in table.to_pylist() if row["status"] == Status.SUCCESS]


def npy_files(output: str) -> list[str]:
    return sorted(os.path.basename(path) for path in glob.glob(os.path.join(output, "*.npy")))


def tar_members(output: str, shard: int) -> dict[str, dict[str, bytes]]:
    """``key -> {extension: bytes}`` over the shard's tar parts, in member order."""
    members: dict[str, dict[str, bytes]] = {}
    for path in sorted(glob.glob(os.path.join(output, f"{shard:06d}_[0-9][0-9].tar"))):
        with tarfile.open(path) as tar:
            for member in tar:
                key, _, extension = member.name.partition(".")
                members.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return members


def check_aligned(output: str) -> int:
    """Every shard's .npy pair matches its parquet: shapes, norms, image.text == similarity.

    A shard without kept rows has no files. Returns the number of kept rows checked.
    """
    total = 0
    for shard in SHARDS:
        rows = kept_rows(output, shard)
        names = [embeddings.embedding_name(shard, kind) for kind in (embeddings.IMAGE, embeddings.TEXT)]
        if not rows:
            assert not any(os.path.exists(os.path.join(output, name)) for name in names), shard
            continue
        matrices = embeddings.read_embeddings(output, shard)
        for kind, matrix in matrices.items():
            assert matrix.dtype == np.float16, (shard, kind)
            assert matrix.shape == (len(rows), DIM), (shard, kind)
            norms = np.linalg.norm(matrix.astype(np.float32), axis=1)
            np.testing.assert_allclose(norms, 1.0, atol=NORM_TOLERANCE)
        dots = (matrices["img"].astype(np.float32) * matrices["text"].astype(np.float32)).sum(axis=1)
        similarities = np.array([row["similarity"] for row in rows], dtype=np.float32)
        np.testing.assert_allclose(dots, similarities, atol=DOT_TOLERANCE, rtol=0)
        assert [row["key"] for row in rows] == sorted(row["key"] for row in rows)
        assert list(tar_members(output, shard)) == [row["key"] for row in rows]
        total += len(rows)
    return total


@pytest.fixture(scope="module")
def demo_input(tmp_path_factory):
    """The demo's WATs, with the image server up for the module's runs."""
    input_dir = str(tmp_path_factory.mktemp("input"))
    with ImageServer({}) as server:
        make_demo_inputs(server, input_dir)
        yield input_dir


@pytest.fixture(scope="module")
def saved(demo_input, tmp_path_factory) -> str:
    output = str(tmp_path_factory.mktemp("saved") / "dataset")
    summary = run_pipeline(demo_input, output, "--save_embeddings")
    assert summary.ledger["shards"]["done"] == len(SHARDS)
    return output


def test_files_per_shard_float16_normalized_and_aligned(saved) -> None:
    assert npy_files(saved) == sorted(embeddings.embedding_name(shard, kind)
                                      for shard in (0, 1) for kind in (embeddings.IMAGE, embeddings.TEXT))
    assert check_aligned(saved) == 16  # 8 kept per picture shard


def test_dot_check_tells_rows_apart(saved) -> None:
    """The image.text == similarity check fails once the text rows are shifted by one."""
    rows = kept_rows(saved, 0)
    matrices = embeddings.read_embeddings(saved, 0)
    shifted = (matrices["img"].astype(np.float32) * np.roll(matrices["text"], 1, axis=0).astype(np.float32)).sum(axis=1)
    similarities = np.array([row["similarity"] for row in rows], dtype=np.float32)
    assert np.abs(shifted - similarities).max() > 10 * DOT_TOLERANCE


def test_rows_equal_open_clip_on_the_tar_sample(saved) -> None:
    """Row i recomputed by open_clip from the i-th kept key's tar image and caption."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from clipcrawl.transforms.clip_model import load_clip

    clip = load_clip(TINY_MODEL_NAME, None, device="cpu", trim_text=False)
    tokenizer = open_clip.get_tokenizer(TINY_MODEL_NAME)
    for shard in (0, 1):
        rows = kept_rows(saved, shard)
        members = tar_members(saved, shard)
        matrices = embeddings.read_embeddings(saved, shard)
        for i, row in enumerate(rows):
            member = members[row["key"]]
            assert member["txt"].decode("utf-8") == row["caption"]
            (image_bytes,) = [data for extension, data in member.items() if extension not in ("txt", "json")]
            with Image.open(io.BytesIO(image_bytes)) as picture:
                pixels = clip.preprocess(picture.convert("RGB")).unsqueeze(0)
            with torch.inference_mode():
                image = F.normalize(clip.model.encode_image(pixels).float(), dim=-1)[0].numpy()
                text = F.normalize(clip.model.encode_text(tokenizer([row["caption"]])).float(), dim=-1)[0].numpy()
            np.testing.assert_allclose(matrices["img"][i].astype(np.float32), image, atol=ROW_TOLERANCE, rtol=0)
            np.testing.assert_allclose(matrices["text"][i].astype(np.float32), text, atol=ROW_TOLERANCE, rtol=0)
            assert abs(float(image @ text) - row["similarity"]) < 1e-5  # fp32 reference == the parquet
            neighbour = matrices["img"][(i + 1) % len(rows)].astype(np.float32)
            assert np.abs(neighbour - image).max() > 10 * ROW_TOLERANCE  # the check tells rows apart


def test_without_the_option_no_npy(demo_input, tmp_path) -> None:
    output = str(tmp_path / "dataset")
    run_pipeline(demo_input, output)
    assert sorted(os.path.basename(path) for path in glob.glob(os.path.join(output, "*.parquet"))) == [
        f"{shard:06d}.parquet" for shard in SHARDS
    ]
    assert npy_files(output) == []


def test_shard_without_kept_rows_has_no_files(saved) -> None:
    """Shard 2 (no pictures) keeps nothing: no files, and read_embeddings says so."""
    assert kept_rows(saved, 2) == []
    assert not any(name.startswith("000002") for name in npy_files(saved))
    with pytest.raises(FileNotFoundError):
        embeddings.read_embeddings(saved, 2)


def test_rerun_without_force_leaves_files_untouched(demo_input, saved, tmp_path) -> None:
    output = str(tmp_path / "dataset")
    shutil.copytree(saved, output)
    before = output_fingerprint(output)
    run_pipeline(demo_input, output, "--save_embeddings")
    assert output_fingerprint(output) == before
    assert check_aligned(output) == 16


def test_forced_reruns_follow_the_new_parquet(demo_input, saved, tmp_path) -> None:
    """A stricter threshold keeps fewer rows: the .npy shrink with the parquet, none left over;
    then a rerun without the option removes them (they would describe another run)."""
    output = str(tmp_path / "dataset")
    shutil.copytree(saved, output)
    similarities = sorted(row["similarity"] for shard in SHARDS for row in kept_rows(saved, shard))
    threshold = similarities[len(similarities) // 2]  # about half of the kept rows drop
    run_pipeline(demo_input, output, "--save_embeddings", f"--clip_threshold={threshold}", force=True)
    assert 0 < check_aligned(output) < len(similarities)
    assert all(row["similarity"] >= threshold for shard in SHARDS for row in kept_rows(output, shard))
    assert not glob.glob(os.path.join(output, ".*.tmp"))

    run_pipeline(demo_input, output, f"--clip_threshold={threshold}", force=True)
    assert npy_files(output) == []
    assert sum(len(kept_rows(output, shard)) for shard in SHARDS) > 0


def _scored(ordinal: int, status: Status = Status.SUCCESS) -> Sample:
    """A shard-4 row with made-up unit embeddings (row ``ordinal`` is e_ordinal)."""
    vector = np.zeros(DIM, dtype=np.float16)
    vector[ordinal] = 1.0
    sample = Sample(sample_key(4, ordinal), 4, f"http://a.com/{ordinal}.jpg", f"caption {ordinal}", "http://a.com/",
                    "in.wat.gz", status=Status.SUCCESS.value, image=b"jpeg", image_format="jpg", similarity=0.5,
                    image_embedding=vector.tobytes(), text_embedding=vector.tobytes())
    if status != Status.SUCCESS:
        sample = dataclasses.replace(sample.reject(status, "below"), image_embedding=None, text_embedding=None)
    return sample


def test_writer_orders_rows_by_key_and_drops_files_when_nothing_is_kept(tmp_path) -> None:
    config = WriterConfig(output_dir=str(tmp_path / "out"), coordinator_url="sqlite://", save_embeddings=True)
    write_shard(config, 4, "in.wat.gz", [_scored(3), _scored(1), _scored(2, Status.BELOW_THRESHOLD), _scored(0)])
    matrices = embeddings.read_embeddings(config.output_dir, 4)
    assert [int(np.argmax(row)) for row in matrices["img"]] == [0, 1, 3]  # key order, kept only
    assert [int(np.argmax(row)) for row in matrices["text"]] == [0, 1, 3]

    write_shard(config, 4, "in.wat.gz", [_scored(0, Status.BELOW_THRESHOLD)])
    assert npy_files(config.output_dir) == []
    with pytest.raises(ValueError, match="keeps nothing"):
        embeddings.embedding_matrices([])
