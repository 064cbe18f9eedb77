"""clipcrawl's side of the download benchmark, run by ``bench/download.py`` as a subprocess.

    python bench/download_clipcrawl.py URLS.txt CONFIG.json RESULT.json [--pillow-only]

Drives the download stage's own DoFn without Beam: ``setup()``, then ``process()`` on
batches of ``threads * 4`` samples (what ``DownloadImages`` asks ``BatchElements`` for),
then ``teardown()``. RESULT.json holds one status per URL and the CPU seconds
(``time.process_time``: every thread of this process) and wall seconds of that loop alone,
plus ``image_cpu_s``: the CPU the download threads spent inside ``process_image`` (summed
``time.thread_time``), which splits the loop into image work and everything else. libvips
decodes in a worker thread of its own, so with pyvips that share of the work is missing from
``image_cpu_s`` (it is in ``cpu_s``).
``--pillow-only`` hides pyvips from ``image_processing``, as on a machine without it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from clipcrawl.transforms import download, image_processing
from clipcrawl.transforms.download import DownloadConfig, _DownloadBatchFn
from clipcrawl.transforms.sample import Sample, sample_key

_image_cpu: list[float] = []  # one entry per process_image call; list.append is thread-safe


def _timed_process_image(data: bytes, spec: image_processing.ImageSpec) -> image_processing.ProcessedImage:
    began = time.thread_time()
    try:
        return image_processing.process_image(data, spec)
    finally:
        _image_cpu.append(time.thread_time() - began)


def main(urls_path: str, config_path: str, result_path: str, pillow_only: bool = False) -> None:
    if pillow_only:
        image_processing.webp_decoder = lambda: None  # what a machine without pyvips runs
    download.process_image = _timed_process_image
    urls = Path(urls_path).read_text().split()
    config = DownloadConfig(**{
        key: tuple(value) if isinstance(value, list) else value
        for key, value in json.loads(Path(config_path).read_text()).items()
    })
    samples = [
        Sample(key=sample_key(0, n), shard_no=0, url=url, caption="bench", page_url=None, source="bench")
        for n, url in enumerate(urls)
    ]
    batch_size = config.threads * 4
    cpu_began, wall_began = time.process_time(), time.perf_counter()
    fn = _DownloadBatchFn(config)
    fn.setup()
    fn.start_bundle()
    handed_on = []
    for start in range(0, len(samples), batch_size):  # as Beam calls it: one bundle of batches
        handed_on.extend(fn.process(samples[start : start + batch_size], Timestamp(0), GlobalWindow()))
    handed_on.extend(fn.finish_bundle())
    fn.teardown()
    results = [windowed.value for windowed in handed_on]
    cpu_s, wall_s = time.process_time() - cpu_began, time.perf_counter() - wall_began
    rows = {
        result.url: {"ok": result.pending and result.image is not None, "status": result.status,
                     "error": result.error_message, "width": result.width, "height": result.height}
        for result in results
    }
    Path(result_path).write_text(json.dumps({
        "cpu_s": cpu_s, "wall_s": wall_s, "image_cpu_s": sum(_image_cpu), "images": len(_image_cpu), "rows": rows,
        "webp_decoder": "pillow" if image_processing.webp_decoder() is None else "pyvips (scaled)",
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4], pillow_only="--pillow-only" in sys.argv[4:])
