"""The offline demo: the real pipeline on embedded defaults, with no network at all.

A loopback HTTP server serves freshly rendered shape pictures; generated WAT files link to
them from pages with captions that match the picture, captions that describe another
picture, and links that are broken on purpose. The pipeline then runs exactly as in
production (DirectRunner, SQLite ledger) with the bundled tiny CLIP model, which decides
on its own which captions fit. Loopback downloads are allowed by an explicit option.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
from collections.abc import Sequence

from clipcrawl.io.wat_writer import ImageLink, Page, write_wat
from clipcrawl.pipelines import build_dataset
from clipcrawl.pipelines.image_server import ImageServer, Route
from clipcrawl.pipelines.synthetic_images import COLOURS, SHAPES, caption_for, iter_examples

DEMO_SEED = 20140820
IMAGES_PER_SHARD = 12
_FORMATS = (("jpg", "JPEG", "image/jpeg"), ("png", "PNG", "image/png"), ("webp", "WEBP", "image/webp"))


@dataclasses.dataclass(frozen=True)
class DemoLink:
    """One image link written into a demo WAT, with what the pipeline should make of it."""

    url: str  # absolute, as the extractor resolves it
    caption: str
    expect: str  # "match", "mismatch", or a final status such as "failed_to_download"


@dataclasses.dataclass(frozen=True)
class DemoInputs:
    wat_paths: tuple[str, ...]
    links: tuple[DemoLink, ...]


def _encode(image, pil_format: str) -> bytes:
    buffer = io.BytesIO()
    options = {} if pil_format == "PNG" else {"quality": 90}
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def _wrong_caption(shape: str, colour: str, rng: random.Random) -> str:
    """A caption naming a different shape in a different colour."""
    other_shape = rng.choice([s for s in SHAPES if s != shape])
    other_colour = rng.choice([c for c in COLOURS if c != colour])
    return caption_for(other_shape, other_colour)


def _image_links(server: ImageServer, shard: int, rng: random.Random) -> tuple[list[ImageLink], list[DemoLink]]:
    """Served pictures for one shard, every third one captioned as something else."""
    written, expected = [], []
    examples = iter_examples(seed=DEMO_SEED + shard, count=IMAGES_PER_SHARD, size_range=(96, 192))
    for index, example in enumerate(examples):
        extension, pil_format, content_type = _FORMATS[index % len(_FORMATS)]
        path = f"/images/{shard}-{index:03d}.{extension}"
        server.add(path, Route(body=_encode(example.image, pil_format), content_type=content_type))
        mismatched = index % 3 == 2
        caption = _wrong_caption(example.shape, example.colour, rng) if mismatched else example.caption
        # Relative src (pages live in /site/{shard}/), resolved against the page URL like a real page's.
        written.append(ImageLink(src=f"../../images/{shard}-{index:03d}.{extension}", alt=caption))
        expected.append(DemoLink(server.url(path), caption, "mismatch" if mismatched else "match"))
    return written, expected


def _broken_links(server: ImageServer, shard: int) -> tuple[list[ImageLink], list[DemoLink]]:
    """Links that must end as recorded statuses, not as crashes or silent drops."""
    server.add(f"/images/{shard}-page.jpg", Route(body=b"<html><body>not a picture</body></html>", content_type="text/html"))
    cases = [
        (f"/images/{shard}-missing.jpg", "a photo that is gone", "failed_to_download"),
        (f"/images/{shard}-page.jpg", "an html page served as a picture", "failed_to_decode"),
        (f"/images/{shard}-000.jpg", "pic", "filtered_text"),
    ]
    written = [ImageLink(src=server.url(path), alt=caption) for path, caption, _ in cases]
    expected = [DemoLink(server.url(path), caption, status) for path, caption, status in cases]
    # Not candidates at all: no alt text, and a data: URL.
    written += [ImageLink(src=f"/images/{shard}-001.png", alt=None), ImageLink(src="data:image/png;base64,AAAA", alt="inline pixel")]
    return written, expected


def make_demo_inputs(server: ImageServer, input_dir: str, shards: int = 2) -> DemoInputs:
    """Write ``shards`` WATs with links to ``server`` plus one WAT with no images at all."""
    os.makedirs(input_dir, exist_ok=True)
    rng = random.Random(DEMO_SEED)
    paths, links = [], []
    for shard in range(shards):
        pictures, expected = _image_links(server, shard, rng)
        broken, expected_broken = _broken_links(server, shard)
        duplicate = pictures[0]  # the same (url, caption) again on another page
        pages = [
            Page(url=server.url(f"/site/{shard}/gallery.html"), images=pictures[: len(pictures) // 2]),
            Page(url=server.url(f"/site/{shard}/more.html"), images=pictures[len(pictures) // 2 :] + broken),
            Page(url=server.url(f"/site/{shard}/again.html"), images=[duplicate]),
        ]
        links += expected + expected_broken + [dataclasses.replace(expected[0], expect="duplicate")]
        paths.append(_write(input_dir, f"demo-{shard:02d}.warc.wat.gz", pages))
    paths.append(_write(input_dir, "demo-no-images.warc.wat.gz", [Page(url=server.url("/site/text-only.html"), images=[])]))
    return DemoInputs(wat_paths=tuple(paths), links=tuple(links))


def _write(input_dir: str, name: str, pages: Sequence[Page]) -> str:
    path = os.path.join(input_dir, name)
    with open(path, "wb") as sink:
        write_wat(sink, pages)
    return path


def demo_args(input_dir: str, dataset_dir: str) -> list[str]:
    """The pipeline arguments of the demo: embedded defaults, loopback allowed explicitly."""
    return [
        f"--input={os.path.join(input_dir, '*.warc.wat.gz')}",
        f"--output={dataset_dir}",
        "--clip_model=clipcrawl-tiny",
        "--clip_pretrained=",
        "--allow_private_addresses",
        # Every demo image is on one loopback host that we run: no need to pace requests to it.
        "--per_host_rate=0",
        "--nickname=demo",
        "--preview_rate=1",  # a handful of rejections: keep a preview of each for the report
        "--force",  # the inputs are regenerated on every demo run (new server port)
        # A few dozen images: worker processes (each importing torch) cost more than they save.
        "--direct_running_mode=in_memory",
    ]


def run_demo(root: str, extra_args: Sequence[str] = ()) -> build_dataset.RunSummary:
    """Serve, write inputs, run the real pipeline; the dataset lands in ``root/dataset``.

    ``extra_args`` come last, so they override the demo's own (e.g. a runner mode).
    """
    input_dir, dataset_dir = os.path.join(root, "input"), os.path.join(root, "dataset")
    with ImageServer({}) as server:
        make_demo_inputs(server, input_dir)
        return build_dataset.run(demo_args(input_dir, dataset_dir) + list(extra_args))
