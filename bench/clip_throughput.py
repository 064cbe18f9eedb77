"""CLIP scoring throughput: the bare open_clip loop against the Beam RunInference stage.

For each precision and batch size, in one process and on the same synthetic pairs:

- ``forward``: open_clip's two towers on pixels and tokens already on the device, plus the
  cosine (the ceiling: no decoding, no Beam). Its FLOP rate gives the fraction of the FLOP limit.
- ``loop``: the bare batched loop over stored JPEG bytes and captions: ``ClipScorer.score``
  (decode on CPU threads or nvJPEG, normalize on the device, both towers, cosine) called batch
  after batch from Python.
- ``beam``: the same scorer behind ``OpenClipModelHandler`` in ``RunInference`` (Beam's batching
  and its threshold DoFn) on the in-process FnApiRunner; timed from the first sample emitted to
  the last one scored, so pipeline start-up is not counted. ``overhead`` = 1 - beam / loop.

Then the deviation of each reduced precision (and of nvJPEG decoding) from fp32 CPU-decoded
similarities on the same pairs. Weights are random (``pretrained`` None): the same code path and
FLOPs as pretrained weights, nothing to download. ``--smoke`` runs tiny sizes on the CPU (CI):
the packaged clipcrawl-tiny (unless ``--model`` is given), fp32 and bf16, so every stage, the
breakdown and both deviation reports run in seconds.

    python bench/clip_throughput.py                 # GPU: ViT-B-32, batches 256..1024, all precisions
    python bench/clip_throughput.py --smoke          # CPU, 10-35 s (tests/test_bench_clip.py)
    python bench/clip_throughput.py --device cpu --batch_sizes 8,32 --pairs 128 --distinct 128 \
        --precisions fp32 --decoders cpu             # ViT-B-32 on 2 CPU cores: ~5 min, shows it works
    python bench/clip_throughput.py --model clipcrawl-tiny --device cpu --stages none --pairs 64 \
        --distinct 64 --batch_sizes 64 --tiny_deviation 200   # precision deviations only
    python bench/clip_throughput.py --json out.json  # also write the rows as JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from clipcrawl.transforms.clip_model import TINY_MODEL_NAME  # torch-free: torch loads in main()

# FLOP rate the "fraction of the FLOP limit" is taken against: dense bf16/fp16 tensor-core peak
# in TFLOP/s from the vendors' data sheets (SXM parts), matched on the device name.
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L4": 121.0, "A10G": 125.0, "T4": 65.0}
WORDS = (
    "a photo of the red old small big house dog cat car tree river city street night beach woman man "
    "child logo icon drawing painting vintage modern wooden kitchen garden mountain sunset portrait "
    "wedding dress shoes table chair sale free download best new black white blue green 2019 hd"
).split()


@dataclasses.dataclass
class Row:
    stage: str
    precision: str
    decoder: str
    batch_size: int
    pairs: int
    seconds: float
    note: str = ""

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else float("nan")


def make_pairs(count: int, distinct: int, size: int, seed: int) -> tuple[list[bytes], list[str]]:
    """``count`` (JPEG, caption) pairs cycling over ``distinct`` images the downloader would store:
    ``size`` px on the long side, JPEG q95, noise plus shapes so the files are not trivially small."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    images = []
    for _ in range(distinct):
        short = rng.choice((size, size * 3 // 4, size * 2 // 3))
        width, height = (size, short) if rng.random() < 0.6 else (short, size)
        base = noise.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
        picture = Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(picture)
        for _ in range(rng.randint(1, 4)):
            x, y = rng.randrange(width), rng.randrange(height)
            draw.ellipse((x, y, x + rng.randint(10, width // 2), y + rng.randint(10, height // 2)),
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=95)
        images.append(buffer.getvalue())
    # Alt-text lengths: mostly short, a long tail (LAION-like), 1..40 words.
    captions = [" ".join(rng.choices(WORDS, k=min(40, max(1, int(rng.lognormvariate(2.0, 0.7))))))
                for _ in range(distinct)]
    return [images[i % distinct] for i in range(count)], [captions[(i * 7) % distinct] for i in range(count)]


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_forward(scorer: Any, images: Sequence[bytes], captions: Sequence[str], batch_size: int, repeat: int) -> float:
    """Seconds per ``len(images)`` pairs of the two towers + cosine on device-resident inputs."""
    import torch
    import torch.nn.functional as F

    from clipcrawl.transforms.clip_model import encode_text

    clip = scorer.clip
    prepared = scorer.images.prepare(images[:batch_size])
    pixels = scorer.images.to_model_input(prepared, clip.input_dtype, scorer.config.channels_last)
    tokens = [clip.tokenizer(list(captions[start : start + batch_size])).to(clip.device)
              for start in range(0, len(captions), batch_size)]

    def one_pass() -> None:
        with torch.inference_mode():
            for chunk in tokens:
                image = F.normalize(clip.model.encode_image(pixels[: len(chunk)]).float(), dim=-1)
                text = F.normalize(encode_text(clip, chunk).float(), dim=-1)
                (image * text).sum(dim=-1)

    one_pass()  # warm-up: kernels chosen, allocator filled
    synchronize(clip.device)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        one_pass()
        synchronize(clip.device)
        best = min(best, time.perf_counter() - start)
    return best


def time_loop(scorer: Any, images: Sequence[bytes], captions: Sequence[str], batch_size: int, repeat: int) -> float:
    """Seconds for ``ClipScorer.score`` over all pairs in batches (bytes in, similarities out)."""
    scorer.score(images[:batch_size], captions[:batch_size])  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for first in range(0, len(images), batch_size):
            scorer.score(images[first : first + batch_size], captions[first : first + batch_size])
        best = min(best, time.perf_counter() - start)
    return best


def similarities(scorer: Any, images: Sequence[bytes], captions: Sequence[str], batch_size: int) -> list[float]:
    values: list[float] = []
    for first in range(0, len(images), batch_size):
        scores = scorer.score(images[first : first + batch_size], captions[first : first + batch_size])
        values += [score.similarity for score in scores]
    return values


def context_length(clip: Any) -> int:
    """The text tower's full context (77 for ViT-B-32, 32 for clipcrawl-tiny): the positions its
    positional embedding has, which is what ``encode_text`` accepts at most."""
    return int(getattr(clip.model, "context_length", 0) or clip.model.positional_embedding.shape[0])


def flops_per_pair(scorer: Any) -> tuple[float, float]:
    """FLOPs of one image and of one caption filling the model's whole context, counted by
    torch's FlopCounterMode on this model (matrix products and attention: what the tensor cores do)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    clip = scorer.clip
    context = context_length(clip)
    size = scorer.images._plan.size if scorer.images._plan else (224, 224)
    pixels = torch.zeros((1, 3, *size), dtype=clip.input_dtype, device=clip.device)
    tokens = torch.ones((1, context), dtype=torch.long, device=clip.device)
    tokens[0, -1] = tokens.max() + 1  # the EOT is the largest id: the full context is used
    counts = []
    # With grad enabled nn.MultiheadAttention skips its fused inference kernel, which the counter
    # has no formula for (it would miss the attention projections); nothing is kept or trained.
    with torch.enable_grad():
        for run in (lambda: clip.model.encode_image(pixels), lambda: clip.model.encode_text(tokens)):
            counter = FlopCounterMode(display=False)
            with counter:
                run()
            counts.append(float(counter.get_total_flops()))
    return counts[0], counts[1]


def peak_tflops(device: str, given: float | None) -> tuple[float | None, str]:
    if given is not None:
        return given, "given"
    if not device.startswith("cuda"):
        return None, "cpu"
    import torch

    name = torch.cuda.get_device_name()
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value, name
    return None, name


def breakdown(scorer: Any, images: Sequence[bytes], captions: Sequence[str], batch_size: int) -> dict[str, float]:
    """Milliseconds per batch of each step of ``ClipScorer.score``, run one after another (the
    scorer overlaps decoding with the GPU; this shows which step bounds it)."""
    import torch

    from clipcrawl.transforms.clip_model import encode_text

    clip, chunk, texts = scorer.clip, images[:batch_size], list(captions[:batch_size])
    steps: dict[str, Any] = {
        "decode+resize": lambda: scorer.images.prepare(chunk),
        "tokenize": lambda: clip.tokenizer(texts),
    }
    prepared = scorer.images.prepare(chunk)
    tokens = clip.tokenizer(texts).to(clip.device)
    pixels = scorer.images.to_model_input(prepared, clip.input_dtype, scorer.config.channels_last)
    steps["to device+normalize"] = lambda: scorer.images.to_model_input(prepared, clip.input_dtype)
    steps["image tower"] = lambda: clip.model.encode_image(pixels)
    steps["text tower"] = lambda: encode_text(clip, tokens)
    steps["score() whole"] = lambda: scorer.score(chunk, texts)
    result = {}
    with torch.inference_mode():
        for name, step in steps.items():
            step()
            synchronize(clip.device)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                step()
                synchronize(clip.device)
                times.append(time.perf_counter() - start)
            result[name] = min(times) * 1000
    return result


def tiny_deviations(
    device: str, precisions: Sequence[str], decoders: Sequence[str], count: int, seed: int = 0
) -> dict[str, Any]:
    """How far reduced precision and nvJPEG move a *trained* model's similarities: the packaged
    tiny CLIP on its synthetic shapes (96-256 px, JPEG q95: stored sizes), half with the true
    caption and half with a wrong colour, against fp32 with CPU decoding; plus keep/drop flips
    at 0.28. tests/test_clip_reference.py builds the same pairs."""
    from clipcrawl.pipelines.synthetic_images import COLOURS, caption_for, iter_examples
    from clipcrawl.transforms.clip_handler import ClipScorer
    from clipcrawl.transforms.clip_scoring import ClipConfig

    images, captions = [], []
    for index, example in enumerate(iter_examples(seed=7 + seed, count=count, size_range=(96, 256))):
        buffer = io.BytesIO()
        example.image.save(buffer, "JPEG", quality=95)
        images.append(buffer.getvalue())
        wrong = [c for c in COLOURS if c != example.colour][index % (len(COLOURS) - 1)]
        captions.append(example.caption if index % 2 == 0 else caption_for(example.shape, wrong))
    results: dict[str, Any] = {}
    reference = None
    for precision in precisions:
        for decoder in decoders:
            config = ClipConfig(model_name=TINY_MODEL_NAME, pretrained=None, device=device, precision=precision,
                                image_decoder=decoder)
            values = [score.similarity for score in ClipScorer(config).score(images, captions)]
            if reference is None:
                reference = values
                continue
            gaps = [abs(a - b) for a, b in zip(values, reference)]
            flips = sum((a >= 0.28) != (b >= 0.28) for a, b in zip(values, reference))
            results[f"{precision}/{decoder}"] = {"max": max(gaps), "p99": percentile(gaps, 99),
                                                 "mean": statistics.fmean(gaps), "flips": flips}
    return results


def load_scorer(model: str, device: str, precision: str, decoder: str, threads: int, options: argparse.Namespace) -> Any:
    from clipcrawl.transforms.clip_handler import ClipScorer
    import torch

    from clipcrawl.transforms.clip_scoring import ClipConfig

    torch.manual_seed(options.seed)  # the same random weights for every precision and decoder
    config = ClipConfig(
        model_name=model, pretrained=None, device=device, precision=precision, image_decoder=decoder,
        preprocess_threads=threads, channels_last=options.channels_last, compile=options.compile,
        micro_batch_size=options.micro_batch_size,
    )
    return ClipScorer(config)


def percentile(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile (linear interpolation; the value itself for one value)."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def deviation(values: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    gaps = [abs(a - b) for a, b in zip(values, reference)]
    return {"max": max(gaps), "p99": percentile(gaps, 99), "mean": statistics.fmean(gaps)}


def print_table(rows: list[Row], ceiling: dict[str, Any]) -> None:
    loops = {(r.precision, r.decoder, r.batch_size): r for r in rows if r.stage == "loop"}
    print(f"\n{'stage':<8} {'precision':<9} {'decoder':<7} {'batch':>5} {'pairs':>7} {'seconds':>8} "
          f"{'pairs/s':>9} {'FLOP limit':>10} {'overhead':>8}  note")
    for row in rows:
        fraction = ""
        if ceiling.get("limit_pairs_per_s"):
            fraction = f"{row.pairs_per_s / ceiling['limit_pairs_per_s']:.1%}"
        overhead = ""
        if row.stage == "beam" and (row.precision, row.decoder, row.batch_size) in loops:
            overhead = f"{1 - row.pairs_per_s / loops[(row.precision, row.decoder, row.batch_size)].pairs_per_s:+.1%}"
        print(f"{row.stage:<8} {row.precision:<9} {row.decoder:<7} {row.batch_size:>5} {row.pairs:>7} "
              f"{row.seconds:>8.3f} {row.pairs_per_s:>9.0f} {fraction:>10} {overhead:>8}  {row.note}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes on the CPU (CI): clipcrawl-tiny unless --model, 16 pairs, batch 8, fp32+bf16")
    parser.add_argument("--model", default=None,
                        help="open_clip model name (default ViT-B-32; clipcrawl-tiny with --smoke)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pairs", type=int, default=16384, help="pairs per timed pass")
    parser.add_argument("--distinct", type=int, default=1024, help="distinct images/captions the pairs cycle over")
    parser.add_argument("--image_size", type=int, default=256, help="stored image size (the downloader's default)")
    parser.add_argument("--batch_sizes", default="256,512,1024")
    parser.add_argument("--precisions", default="fp32,tf32,bf16,fp16,pure_bf16,pure_fp16")
    parser.add_argument("--decoders", default="cpu,nvjpeg", help="nvjpeg rows only where CUDA is present")
    parser.add_argument("--stages", default="forward,loop,beam", help="timed rows; 'none': deviations only")
    parser.add_argument("--threads", type=int, default=0, help="CPU decode threads (0: min(8, cores))")
    parser.add_argument("--micro_batch_size", type=int, default=None)
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile both towers (slow start)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per row; the best is kept")
    parser.add_argument("--peak_tflops", type=float, default=None, help="FLOP rate for the limit (default: by GPU)")
    parser.add_argument("--no_pin", action="store_true", help="CPU decoding into pageable, not pinned, buffers")
    parser.add_argument("--breakdown", action="store_true", help="also time each step of score() per batch")
    parser.add_argument("--tiny_deviation", type=int, default=0, metavar="N",
                        help="also measure precision/nvJPEG deviation on the trained tiny CLIP over N shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write rows, deviations and the FLOP count here")
    options = parser.parse_args(argv)
    if options.smoke:
        # The tiny model makes every row cheap; bf16 beside fp32 runs both deviation reports (its
        # CPU timings say nothing about a GPU, its similarities are what the reports compare).
        options.model = options.model or TINY_MODEL_NAME
        options.device, options.pairs, options.distinct, options.batch_sizes = "cpu", 16, 8, "8"
        options.precisions, options.repeat, options.decoders = "fp32,bf16", 1, "cpu"
        options.breakdown, options.tiny_deviation = True, options.tiny_deviation or 8
    options.model = options.model or "ViT-B-32"
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.getLogger().addFilter(lambda record: "No pretrained weights" not in record.getMessage())
    import torch

    from clipcrawl.transforms.clip_model import resolve_device

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    import clip_beam_stage

    device = resolve_device(options.device)
    # fp32 first: the deviations are measured against it (else against the first precision given).
    precisions = sorted(options.precisions.split(","), key=lambda name: name != "fp32")
    decoders = [d for d in options.decoders.split(",") if d == "cpu" or device.startswith("cuda")]
    batch_sizes = [int(b) for b in options.batch_sizes.split(",")]
    stages = options.stages.split(",")
    images, captions = make_pairs(options.pairs, options.distinct, options.image_size, options.seed)
    weights = "packaged weights" if options.model == TINY_MODEL_NAME else "random weights"
    print(f"device {device} ({torch.cuda.get_device_name() if device.startswith('cuda') else 'CPU'}), "
          f"torch {torch.__version__}, model {options.model} ({weights}), {options.pairs} pairs "
          f"({options.distinct} distinct, {statistics.fmean(len(i) for i in images[:options.distinct]) / 1024:.1f} KB "
          f"JPEG, {options.image_size} px)", flush=True)

    rows: list[Row] = []
    reference: list[float] | None = None
    deviations: dict[str, dict[str, float]] = {}
    ceiling: dict[str, Any] = {}
    report: dict[str, Any] = {"breakdown": {}}
    check = images[: min(len(images), 2048)], captions[: min(len(images), 2048)]
    for precision in precisions:
        for decoder in decoders:
            scorer = load_scorer(options.model, device, precision, decoder, options.threads, options)
            scorer.images.pin_memory = scorer.images.pin_memory and not options.no_pin
            if not ceiling:
                image_flops, text_flops = flops_per_pair(scorer)
                tokens = scorer.clip.tokenizer(list(captions[: options.distinct])).argmax(dim=-1) + 1
                peak, peak_source = peak_tflops(device, options.peak_tflops)
                per_pair = image_flops + text_flops
                context = context_length(scorer.clip)
                ceiling = {
                    "image_gflop": image_flops / 1e9, "text_gflop_full_context": text_flops / 1e9,
                    "context_length": context,
                    "mean_caption_tokens": float(tokens.float().mean()), "peak_tflops": peak,
                    "peak_source": peak_source, "limit_pairs_per_s": peak * 1e12 / per_pair if peak else None,
                }
                print(f"FLOPs per pair (torch FlopCounterMode): image {image_flops / 1e9:.3g} G + {context}-token text "
                      f"{text_flops / 1e9:.3g} G; captions average {ceiling['mean_caption_tokens']:.1f} tokens; "
                      + (f"limit at {peak:g} TFLOP/s ({peak_source}): {ceiling['limit_pairs_per_s']:.0f} pairs/s"
                         if peak else "no FLOP limit for this device"), flush=True)
            values = similarities(scorer, *check, batch_sizes[-1])
            if reference is None:
                reference = values
            else:
                deviations[f"{precision}/{decoder}"] = deviation(values, reference)
            if "beam" in stages:  # the first pipeline of a process pays Beam's one-time set-up
                clip_beam_stage.run_stage(scorer, images[: batch_sizes[0]], captions[: batch_sizes[0]], batch_sizes[0])
            if options.breakdown:
                steps = breakdown(scorer, images, captions, batch_sizes[-1])
                report["breakdown"][f"{precision}/{decoder}/{batch_sizes[-1]}"] = steps
                print(f"  ms per batch of {batch_sizes[-1]} ({precision}, {decoder}): "
                      + ", ".join(f"{name} {ms:.1f}" for name, ms in steps.items()), flush=True)
            for batch_size in batch_sizes:
                if "forward" in stages and decoder == decoders[0]:
                    seconds = time_forward(scorer, images, captions, batch_size, options.repeat)
                    rows.append(Row("forward", precision, "-", batch_size, len(images), seconds, "inputs on device"))
                    print(f"  forward {precision} batch {batch_size}: {rows[-1].pairs_per_s:.0f} pairs/s", flush=True)
                if "loop" in stages:
                    seconds = time_loop(scorer, images, captions, batch_size, options.repeat)
                    rows.append(Row("loop", precision, decoder, batch_size, len(images), seconds))
                    print(f"  loop {precision} {decoder} batch {batch_size}: {rows[-1].pairs_per_s:.0f} pairs/s", flush=True)
                if "beam" in stages:
                    best = None
                    for _ in range(options.repeat):
                        timing = clip_beam_stage.run_stage(scorer, images, captions, batch_size)
                        best = timing if best is None or timing["seconds"] < best["seconds"] else best
                    rows.append(Row("beam", precision, decoder, batch_size, len(images), best["seconds"],
                                    f"pipeline wall {best['pipeline_wall']:.2f} s"))
                    print(f"  beam {precision} {decoder} batch {batch_size}: {rows[-1].pairs_per_s:.0f} pairs/s", flush=True)
            del scorer
            if device.startswith("cuda"):
                torch.cuda.empty_cache()

    if rows:
        print_table(rows, ceiling)
    if deviations:
        print(f"\n|similarity - {precisions[0]} {decoders[0]}-decoded| over {len(check[0])} pairs: "
              + "; ".join(f"{name}: max {d['max']:.2e}, p99 {d['p99']:.2e}, mean {d['mean']:.2e}"
                          for name, d in deviations.items()))
    if options.tiny_deviation:
        report["tiny_deviations"] = tiny_deviations(device, precisions, decoders, options.tiny_deviation,
                                                     options.seed)
        print(f"\ntrained tiny CLIP, {options.tiny_deviation} shapes (half true captions), |similarity - fp32 cpu| "
              "and keep/drop flips at 0.28: " + ("; ".join(
                  f"{name}: max {d['max']:.2e}, p99 {d['p99']:.2e}, mean {d['mean']:.2e}, flips {d['flips']}"
                  for name, d in report["tiny_deviations"].items()) or "nothing to compare (one precision, one decoder)"))
    if options.json:
        with open(options.json, "w") as handle:
            json.dump({**report, "ceiling": ceiling, "deviations": deviations, "pin_memory": not options.no_pin,
                       "rows": [dict(dataclasses.asdict(r), pairs_per_s=r.pairs_per_s) for r in rows]}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
