"""Per-shard CLIP embeddings, as LAION released them: ``{shard:06d}_img_emb.npy`` and
``{shard:06d}_text_emb.npy``, float16, L2-normalized, one row per kept sample.

Row ``i`` of both files is the ``i``-th kept sample in key order, which is the order of the
``success`` rows in the shard's parquet (the writer sorts rows by key). The dot product of an
image row and the text row beside it is the sample's ``similarity`` up to float16 rounding
(~1e-3).

A shard that keeps nothing has no embedding files: the writer does not know the model's
width without a kept row, and a ``(0, 0)`` array would break ``np.concatenate`` over shards.
The writer removes a shard's earlier embedding files when a rerun writes none (nothing kept,
or run without ``--save_embeddings``), so files on disk always match the shard's parquet.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np
from fsspec.core import url_to_fs

from clipcrawl.transforms.sample import Sample

DTYPE = np.float16
IMAGE = "img"
TEXT = "text"


def embedding_name(shard_no: int, kind: str) -> str:
    """``{shard:06d}_img_emb.npy`` or ``{shard:06d}_text_emb.npy``."""
    if kind not in (IMAGE, TEXT):
        raise ValueError(f"embedding kind is {IMAGE!r} or {TEXT!r}, got {kind!r}")
    return f"{shard_no:06d}_{kind}_emb.npy"


def embedding_matrices(kept: Sequence[Sample]) -> dict[str, np.ndarray]:
    """``{img, text}`` -> [len(kept), dim] float16, rows in the order of ``kept``.

    Every kept sample must carry both embeddings (the scorer adds them when asked); a missing
    one is a pipeline bug and raises rather than shifting the rows. ``kept`` must not be empty:
    a shard that keeps nothing writes no files.
    """
    if not kept:
        raise ValueError("no kept samples: a shard that keeps nothing has no embedding files")
    matrices = {}
    for kind, field in ((IMAGE, "image_embedding"), (TEXT, "text_embedding")):
        rows = []
        for sample in kept:
            data = getattr(sample, field)
            if data is None:
                raise RuntimeError(f"kept sample {sample.key} has no {field}: was it scored with save_embeddings?")
            rows.append(np.frombuffer(data, dtype=DTYPE))
        if len({row.shape for row in rows}) > 1:
            raise RuntimeError(f"{field} lengths differ within one shard: {sorted({row.size for row in rows})}")
        matrices[kind] = np.stack(rows)
    return matrices


def write_matrix(matrix: np.ndarray, sink: BinaryIO) -> None:
    """A standard .npy (``np.load`` reads it; no pickle)."""
    np.save(sink, np.ascontiguousarray(matrix, dtype=DTYPE), allow_pickle=False)


def read_embeddings(output_dir: str, shard_no: int, **storage_options: Any) -> dict[str, np.ndarray]:
    """The shard's ``{img, text}`` matrices from a local path or fsspec URL.

    Raises FileNotFoundError for a shard without files (it kept nothing, or the run did not
    save embeddings): its parquet tells which.
    """
    fs, root = url_to_fs(output_dir, **storage_options)
    matrices = {}
    for kind in (IMAGE, TEXT):
        with fs.open(posixpath.join(root, embedding_name(shard_no, kind)), "rb") as source:
            matrices[kind] = np.load(source, allow_pickle=False)
    return matrices
