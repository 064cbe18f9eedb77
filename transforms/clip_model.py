"""Loading an open_clip model (hub weights, a local checkpoint, or the packaged tiny one).

torch and open_clip are imported inside the functions, never at module import, so the CLI
and the CPU-only stages that import this package start fast and never touch CUDA.

``clipcrawl-tiny`` is a small CLIP the project trains itself on synthetic shapes
(``python -m clipcrawl.pipelines.train_tiny_clip``): its open_clip config and fp16 state dict
ship in ``clipcrawl/transforms/assets``, so tests and the demo score images offline.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_LOG = logging.getLogger(__name__)

TINY_MODEL_NAME = "clipcrawl-tiny"
ASSETS_DIR = "assets"
TINY_CONFIG_FILE = f"{TINY_MODEL_NAME}.json"
TINY_CHECKPOINT_FILE = f"{TINY_MODEL_NAME}.pt"

DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class LoadedClip:
    """A model ready for inference and the two transforms its inputs must go through."""

    model: Any  # open_clip.CLIP in eval mode, on ``device``
    preprocess: Callable[[Any], "torch.Tensor"]  # PIL image -> CHW tensor (inference transform)
    tokenizer: Callable[[list[str]], "torch.Tensor"]  # captions -> token ids
    device: str
    model_name: str


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; others pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def register_tiny_config(config_path: str | os.PathLike[str] | None = None) -> None:
    """Makes ``clipcrawl-tiny`` a model name open_clip knows (once per process).

    ``config_path`` overrides the packaged config; the trainer uses it while it writes a new one.
    """
    import open_clip

    if config_path is not None:
        open_clip.add_model_config(config_path)
        return
    if TINY_MODEL_NAME in open_clip.list_models():
        return
    resource = importlib.resources.files("clipcrawl.transforms").joinpath(ASSETS_DIR, TINY_CONFIG_FILE)
    with importlib.resources.as_file(resource) as path:
        open_clip.add_model_config(path)  # reads the file now; the path need not outlive this


def load_clip(
    model_name: str,
    pretrained: str | None,
    device: str = "auto",
    precision: str = "fp32",
) -> LoadedClip:
    """An open_clip model in eval mode with its inference preprocess and tokenizer.

    ``pretrained`` is an open_clip tag (``"openai"``: hub cache or download), a local
    checkpoint path, or None / ``""`` for random weights. ``clipcrawl-tiny`` is the
    exception: a path means a retrained checkpoint of the same architecture, anything else
    (None, ``""``, or a tag such as the ``openai`` default, which it has no weights for)
    means its packaged checkpoint.
    """
    import open_clip

    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {DEVICES} or cuda:N, got {device!r}")
    device = resolve_device(device)
    if model_name == TINY_MODEL_NAME:
        register_tiny_config()
        model, preprocess = _create_tiny(pretrained, device, precision)
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained or None, device=device, precision=precision
        )
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    _LOG.info("loaded CLIP %s (%s) on %s, %s", model_name, pretrained or "packaged/random", device, precision)
    return LoadedClip(model=model, preprocess=preprocess, tokenizer=tokenizer, device=device, model_name=model_name)


def _create_tiny(pretrained: str | None, device: str, precision: str) -> tuple[Any, Callable[[Any], Any]]:
    import open_clip

    if pretrained and not os.path.isfile(pretrained) and _looks_like_path(pretrained):
        raise FileNotFoundError(f"{TINY_MODEL_NAME} checkpoint not found: {pretrained}")
    if pretrained and os.path.isfile(pretrained):
        model, _, preprocess = open_clip.create_model_and_transforms(
            TINY_MODEL_NAME, pretrained=pretrained, device=device, precision=precision
        )
        return model, preprocess
    resource = importlib.resources.files("clipcrawl.transforms").joinpath(ASSETS_DIR, TINY_CHECKPOINT_FILE)
    if not resource.is_file():
        raise FileNotFoundError(
            f"packaged {TINY_CHECKPOINT_FILE} is missing; run python -m clipcrawl.pipelines.train_tiny_clip"
        )
    if pretrained:
        _LOG.info("%s has no pretrained tag %r; using its packaged weights", TINY_MODEL_NAME, pretrained)
    with importlib.resources.as_file(resource) as path:
        # The file holds fp16 tensors; load_state_dict casts them into the fp32 parameters.
        model, _, preprocess = open_clip.create_model_and_transforms(
            TINY_MODEL_NAME, pretrained=str(path), device=device, precision=precision
        )
    return model, preprocess


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".npz"))


def cosine_similarities(image_features: "torch.Tensor", text_features: "torch.Tensor") -> "torch.Tensor":
    """Row ``i`` of the result is cos(image_i, text_i): pairs, not the all-pairs matrix."""
    import torch.nn.functional as F

    if image_features.shape != text_features.shape:
        raise ValueError(f"feature shapes differ: {tuple(image_features.shape)} vs {tuple(text_features.shape)}")
    image = F.normalize(image_features.float(), dim=-1)
    text = F.normalize(text_features.float(), dim=-1)
    return (image * text).sum(dim=-1)
