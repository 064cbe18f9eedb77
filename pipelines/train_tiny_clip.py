"""Trains ``clipcrawl-tiny``, the small CLIP that tests and the demo score images with.

No machine here can download CLIP weights, so the project trains its own: open_clip's
``CLIP`` class with its standard tokenizer (vocab 49408), a 2-layer text transformer and the
smallest "modified ResNet" vision tower (CLIP's RN design: one bottleneck block per stage,
width 8, 32x32 input), on synthetic coloured shapes, with the standard symmetric contrastive
loss. A 2-layer ViT was tried first: it learned colour at once but not shape in minutes of
CPU; the conv tower learns both. Each batch holds every (shape, colour) caption once, so there
are no duplicate captions (false negatives) and every batch has the hard negatives: the same
shape in another colour, the same colour in another shape. Images pass through open_clip's
inference preprocess for this config, exactly what ``load_clip`` applies when scoring.

Deterministic (fixed seeds, fixed thread count, deterministic algorithms); about 70 s
on two CPU cores::

    python -m clipcrawl.pipelines.train_tiny_clip [--output-dir DIR] [--steps N] [--seed S]

writes ``clipcrawl-tiny.json`` (open_clip model config) and ``clipcrawl-tiny.pt`` (fp16 state
dict) into ``clipcrawl/transforms/assets`` unless told otherwise, then prints the similarity
distributions on freshly rendered pictures (another seed) as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import clipcrawl.transforms
from clipcrawl.pipelines import synthetic_images
from clipcrawl.transforms import clip_model

if TYPE_CHECKING:
    import torch

_LOG = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = Path(clipcrawl.transforms.__file__).parent / clip_model.ASSETS_DIR
DEFAULT_STEPS = 2000
DEFAULT_SEED = 0
EVAL_SEED_OFFSET = 10_000  # evaluation pictures come from a seed training never used
THREADS = 2
LAION_THRESHOLD = 0.28

# Small enough to train in a minute or so, big enough to tell eight colours and five shapes
# apart. The token embedding (49408 x 32) is most of the checkpoint: ~3 MB in fp16.
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
}

LEARNING_RATE = 4e-3
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.05
POOL_PER_CLASS = 200
# Fixed, not learned: a learned temperature grows until ranking is perfect and stops pushing
# "a red square" away from a red circle; at a fixed, moderate one the loss keeps separating
# partial mismatches, so cosine similarities land where LAION's 0.28 threshold works.
LOGIT_SCALE = 4.0


def train(output_dir: Path, steps: int, seed: int) -> dict[str, Any]:
    """Trains, writes the config and fp16 checkpoint, and returns the evaluation report."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)

    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / clip_model.TINY_CONFIG_FILE
    config_path.write_text(json.dumps(TINY_CONFIG, indent=2) + "\n", encoding="utf-8")
    clip_model.register_tiny_config(config_path)
    model, _, preprocess = open_clip.create_model_and_transforms(clip_model.TINY_MODEL_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(clip_model.TINY_MODEL_NAME)

    captions = [synthetic_images.caption_for(shape, colour) for shape, colour in synthetic_images.all_classes()]
    pool = render_pool(seed, POOL_PER_CLASS, preprocess)
    texts = tokenizer(captions)  # a batch is every caption once: no duplicate (false) negatives
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    model.logit_scale.requires_grad_(False)
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.98), eps=1e-6, fused=True
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, steps))

    model.train()
    for step in range(steps):
        picks = torch.randint(POOL_PER_CLASS, (len(captions),), generator=generator)
        images = pool[torch.arange(len(captions)), picks]
        image_features, text_features, logit_scale = model(images, texts)
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            _LOG.info("step %d/%d loss %.4f", step, steps, loss.item())

    state = {name: tensor.half() if tensor.is_floating_point() else tensor for name, tensor in model.state_dict().items()}
    checkpoint_path = output_dir / clip_model.TINY_CHECKPOINT_FILE
    torch.save(state, checkpoint_path)

    model.load_state_dict(state)  # evaluate exactly what was saved (fp16 weights cast back to fp32)
    model.eval()
    return measure_separation(model, preprocess, tokenizer, seed=seed + EVAL_SEED_OFFSET)


def render_pool(seed: int, per_class: int, preprocess: Any) -> "torch.Tensor":
    """Preprocessed training pictures, indexed ``[class, i]`` in ``all_classes()`` order.

    Rendering once and drawing batches from the pool costs a few seconds instead of half of
    every step; a fresh random draw per step still makes new batch combinations.
    """
    import torch

    classes = synthetic_images.all_classes()
    slots: dict[tuple[str, str], list[Any]] = {cls: [] for cls in classes}
    for example in synthetic_images.iter_examples(seed, count=per_class * len(classes)):
        slots[(example.shape, example.colour)].append(preprocess(example.image))
    return torch.stack([torch.stack(slots[cls]) for cls in classes])


def _lr_factor(step: int, steps: int) -> float:
    """Linear warmup, then cosine decay to zero."""
    warmup = max(1, int(steps * WARMUP_FRACTION))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def similarity_matrix(model: Any, preprocess: Any, tokenizer: Any, images: list[Any], captions: list[str]) -> np.ndarray:
    """Cosine similarity of every image (rows) with every caption (columns)."""
    import torch

    with torch.inference_mode():
        image_features = model.encode_image(torch.stack([preprocess(image) for image in images]), normalize=True)
        text_features = model.encode_text(tokenizer(captions), normalize=True)
        return (image_features @ text_features.T).float().numpy()


def measure_separation(
    model: Any, preprocess: Any, tokenizer: Any, seed: int, rounds: int = 5, threshold: float = LAION_THRESHOLD
) -> dict[str, Any]:
    """Similarity distributions of matched and mismatched captions on fresh pictures.

    Mismatches come in three kinds: same shape in another colour (``colour_mismatch``),
    same colour in another shape (``shape_mismatch``), and both different. ``accuracy`` is
    how often the true caption scores highest among all captions.
    """
    classes = synthetic_images.all_classes()
    captions = [synthetic_images.caption_for(shape, colour) for shape, colour in classes]
    batch = list(synthetic_images.iter_examples(seed, count=rounds * len(classes)))
    sims = similarity_matrix(model, preprocess, tokenizer, [example.image for example in batch], captions)
    groups: dict[str, list[float]] = {"matched": [], "colour_mismatch": [], "shape_mismatch": [], "both_mismatch": []}
    correct = 0
    for row, example in zip(sims, batch):
        correct += int(classes[int(row.argmax())] == (example.shape, example.colour))
        for (shape, colour), value in zip(classes, row):
            same_shape, same_colour = shape == example.shape, colour == example.colour
            kind = {
                (True, True): "matched",
                (True, False): "colour_mismatch",
                (False, True): "shape_mismatch",
                (False, False): "both_mismatch",
            }[(same_shape, same_colour)]
            groups[kind].append(float(value))
    report: dict[str, Any] = {"seed": seed, "images": len(batch), "threshold": threshold}
    report["accuracy"] = correct / len(batch)
    for kind, values in groups.items():
        array = np.asarray(values)
        on_correct_side = array >= threshold if kind == "matched" else array < threshold
        report[kind] = {
            "n": len(values),
            "mean": round(float(array.mean()), 4),
            "p5": round(float(np.percentile(array, 5)), 4),
            "p95": round(float(np.percentile(array, 95)), 4),
            "correct_side": round(float(on_correct_side.mean()), 4),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")  # open_clip is chatty at INFO
    _LOG.setLevel(logging.INFO)
    started = time.monotonic()
    report = train(args.output_dir, args.steps, args.seed)
    report["train_seconds"] = round(time.monotonic() - started, 1)
    report["checkpoint_bytes"] = (args.output_dir / clip_model.TINY_CHECKPOINT_FILE).stat().st_size
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
