"""Reading WebDataset tars back: grouping by key, incomplete samples, out-of-order and cut tars."""

from __future__ import annotations

import io
import json
import pathlib
import tarfile

import fsspec
import pytest
import webdataset

from clipcrawl.io.shard_writer import WriterConfig, tar_name, write_shard
from clipcrawl.io.webdataset_input import (
    BrokenTarError,
    TarSample,
    is_webdataset,
    iter_tar_samples,
    split_member_name,
)
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.status import Status

JPEG = b"\xff\xd8\xff\xe0 not really a jpeg"
PNG = b"\x89PNG\r\n\x1a\n fake png"


def write_webdataset(path: pathlib.Path, samples: list[dict[str, bytes | str]]) -> str:
    with open(path, "wb") as sink:
        writer = webdataset.TarWriter(sink, encoder=False, mtime=0.0)
        for sample in samples:
            writer.write(sample)
        writer.close()
    return str(path)


def write_members(path: pathlib.Path, members: list[tuple[str, bytes | None]]) -> str:
    """A tar with exactly these members, in this order; None data makes a directory."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_is_webdataset() -> None:
    for uri in ("00000_00.tar", "s3://b/x.TAR", "x.tar.gz", "x.tgz"):
        assert is_webdataset(uri), uri
    for uri in ("x.parquet", "x.warc.wat.gz", "x.tar.zst", "tar"):
        assert not is_webdataset(uri), uri


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("000123.jpg", ("000123", "jpg")),
        ("dir/sub/000123.Seg.PNG", ("dir/sub/000123", "seg.png")),
        ("./a.txt", ("./a", "txt")),
        ("README", None),
        ("a.", None),
        ("dir/._000123.jpg", None),
        (".DS_Store", None),
        ("__MACOSX/000123.jpg", None),
        ("__key__", None),
    ],
)
def test_split_member_name(name: str, expected: tuple[str, str] | None) -> None:
    assert split_member_name(name) == expected


def test_complete_samples_read_back_exactly(tmp_path: pathlib.Path) -> None:
    uri = write_webdataset(
        tmp_path / "x.tar",
        [
            {"__key__": "000", "jpg": JPEG, "txt": b"a cat", "json": b'{"url": "http://a/0.jpg", "similarity": 0.31}'},
            {"__key__": "001", "jpeg": JPEG, "txt": "caf\xe9 \U0001f408".encode(), "json": b"{}"},
            {"__key__": "002", "webp": b"RIFF webp", "txt": b""},
        ],
    )
    assert list(iter_tar_samples(uri)) == [
        TarSample("000", JPEG, "jpg", "a cat", {"url": "http://a/0.jpg", "similarity": 0.31}, None),
        TarSample("001", JPEG, "jpg", "caf\xe9 \U0001f408", {}, None),
        TarSample("002", b"RIFF webp", "webp", "", {}, None),
    ]


def test_incomplete_samples_carry_a_problem(tmp_path: pathlib.Path) -> None:
    uri = write_webdataset(
        tmp_path / "x.tar",
        [
            {"__key__": "no_txt", "png": PNG, "json": b'{"k": 1}'},
            {"__key__": "no_image", "txt": b"caption only", "npy": b"\x93NUMPY"},
            {"__key__": "bad_json", "jpg": JPEG, "txt": b"c", "json": b"{not json"},
            {"__key__": "list_json", "jpg": JPEG, "txt": b"\xff\xfebroken utf8", "json": b"[1, 2]"},
            {"__key__": "two_images", "jpg": JPEG, "png": PNG, "txt": b"t"},
        ],
    )
    samples = {sample.key: sample for sample in iter_tar_samples(uri)}
    assert list(samples) == ["no_txt", "no_image", "bad_json", "list_json", "two_images"]
    assert samples["no_txt"] == TarSample("no_txt", PNG, "png", None, {"k": 1}, "no caption member (.txt)")
    assert samples["no_image"].image is None and samples["no_image"].image_format is None
    assert samples["no_image"].caption == "caption only"
    assert samples["no_image"].problem == "no image member (.jpg, .jpeg, .png, .webp)"
    assert samples["bad_json"].metadata == {}
    assert samples["bad_json"].problem.startswith("metadata .json is not valid JSON")
    assert samples["list_json"].caption == "\ufffd\ufffdbroken utf8"
    assert samples["list_json"].problem == "metadata .json is a JSON list, not an object"
    assert (samples["two_images"].image, samples["two_images"].image_format) == (JPEG, "jpg")
    assert samples["two_images"].problem == "several image members (jpg, png); kept .jpg"


def test_skipped_entries_and_directory_keys(tmp_path: pathlib.Path) -> None:
    uri = write_members(
        tmp_path / "x.tar",
        [
            ("shard", None),
            ("shard/000.jpg", JPEG),
            ("shard/000.txt", b"in a folder"),
            ("__MACOSX/shard/._000.jpg", b"apple double"),
            ("shard/._000.jpg", b"apple double"),
            ("shard/LICENSE", b"no extension"),
            ("other/000.jpg", PNG),
            ("other/000.txt", b"same stem, other folder"),
        ],
    )
    assert list(iter_tar_samples(uri)) == [
        TarSample("shard/000", JPEG, "jpg", "in a folder", {}, None),
        TarSample("other/000", PNG, "jpg", "same stem, other folder", {}, None),
    ]


def test_keys_out_of_order_are_separate_samples_with_a_problem(tmp_path: pathlib.Path) -> None:
    uri = write_members(
        tmp_path / "x.tar",
        [("a.jpg", JPEG), ("b.jpg", PNG), ("a.txt", b"caption a"), ("b.txt", b"caption b"), ("b.txt", b"again")],
    )
    samples = list(iter_tar_samples(uri))
    assert [(s.key, s.image, s.caption) for s in samples] == [
        ("a", JPEG, None),
        ("b", PNG, None),
        ("a", None, "caption a"),
        ("b", None, "caption b"),
        ("b", None, "again"),
    ]
    assert samples[0].problem == "no caption member (.txt)"
    for later in samples[2:]:
        assert later.problem.startswith(f"key {later.key!r} appears again after other keys")
        assert later.problem.endswith("no image member (.jpg, .jpeg, .png, .webp)")


def test_truncated_tar_yields_complete_samples_then_raises(tmp_path: pathlib.Path) -> None:
    whole = pathlib.Path(
        write_webdataset(
            tmp_path / "whole.tar",
            [{"__key__": f"{i:03d}", "jpg": JPEG * 100, "txt": f"caption {i}".encode()} for i in range(4)],
        )
    )
    data = whole.read_bytes()
    with tarfile.open(whole) as tar:
        third_image = tar.getmember("002.jpg")
    # Sample 002's image begins: 001 is complete. At a header (pax or plain), 001 may not be.
    cuts = {
        "in_data": (third_image.offset_data + 100, ["000", "001"]),
        "at_boundary": (third_image.offset, ["000"]),
        "in_pax_header": (third_image.offset + 600, ["000"]),
    }
    for name, (cut, complete) in cuts.items():
        cut_path = tmp_path / f"{name}.tar"
        cut_path.write_bytes(data[:cut])
        samples = iter_tar_samples(str(cut_path))
        assert [next(samples).key for _ in complete] == complete
        with pytest.raises(BrokenTarError, match=f"{name}.tar"):
            next(samples)


def test_empty_and_garbage_files_are_broken(tmp_path: pathlib.Path) -> None:
    (tmp_path / "empty.tar").write_bytes(b"")
    (tmp_path / "garbage.tar").write_bytes(b"this is not a tar " * 100)
    for name in ("empty.tar", "garbage.tar"):
        with pytest.raises(BrokenTarError, match=name):
            list(iter_tar_samples(str(tmp_path / name)))


def test_tar_with_no_samples_yields_nothing(tmp_path: pathlib.Path) -> None:
    assert list(iter_tar_samples(write_webdataset(tmp_path / "empty.tar", []))) == []


def test_gzipped_tar(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("k.png", PNG), ("k.txt", b"zipped")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert list(iter_tar_samples(str(path))) == [TarSample("k", PNG, "png", "zipped", {}, None)]
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(BrokenTarError):
        list(iter_tar_samples(str(cut)))


def test_clipcrawl_shard_round_trips(tmp_path: pathlib.Path) -> None:
    samples = [
        Sample(
            key=sample_key(7, ordinal), shard_no=7, url=f"http://a/{ordinal}.jpg", caption=f"caption {ordinal} é",
            page_url="http://a/", source="in.wat.gz", status=Status.SUCCESS.value, image=JPEG + bytes([ordinal]),
            image_format=image_format, width=8, height=8, sha256="0" * 64, similarity=0.3 + ordinal / 100,
        )
        for ordinal, image_format in enumerate(["jpg", "png", "webp"])
    ]
    config = WriterConfig(output_dir=str(tmp_path / "out"), coordinator_url="sqlite://")
    write_shard(config, 7, "in.wat.gz", samples)
    read = list(iter_tar_samples(str(tmp_path / "out" / tar_name(7, 0))))
    assert [sample.key for sample in read] == ["0000070000000", "0000070000001", "0000070000002"]
    for original, back in zip(samples, read):
        assert back.problem is None
        assert (back.image, back.image_format, back.caption) == (original.image, original.image_format, original.caption)
        assert back.metadata == json.loads(json.dumps(original.metadata()))


def test_reads_through_fsspec_urls() -> None:
    """memory:// stands in for s3:// or gs://: nothing assumes a local path."""
    with fsspec.open("memory://tars/00000.tar", "wb") as sink:
        writer = webdataset.TarWriter(sink, encoder=False)
        writer.write({"__key__": "k", "png": PNG, "txt": b"remote"})
        writer.close()
    assert list(iter_tar_samples("memory://tars/00000.tar")) == [TarSample("k", PNG, "png", "remote", {}, None)]
