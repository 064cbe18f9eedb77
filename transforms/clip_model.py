"""Loading an open_clip model (hub weights, a local checkpoint, or the packaged tiny one).

torch and open_clip are imported inside the functions, never at module import, so the CLI
and the CPU-only stages that import this package start fast and never touch CUDA.

``clipcrawl-tiny`` is a small CLIP the project trains itself on synthetic shapes
(``python -m clipcrawl.pipelines.train_tiny_clip``): its open_clip config and fp16 state dict
ship in ``clipcrawl/transforms/assets``, so tests and the demo score images offline.

Text is encoded trimmed to the longest caption of a batch instead of the full context (77
tokens for ViT-B-32) where that is exact: open_clip's CLIP text tower is causal and pools the
end-of-text token, so the tokens after it never reach the pooled feature. ``encode_text``
does the trimmed pass; ``load_clip`` checks once against open_clip's own that it agrees.
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
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "pure_fp16", "pure_bf16")
# Largest |trimmed - full| text feature difference (relative to the feature norm) the load-time
# check accepts; fp32 differences are ~1e-7, fp16/bf16 ones ~1e-3 (reordered reductions).
_TRIM_TOLERANCE = {"fp32": 1e-5, "tf32": 1e-2, "fp16": 2e-2, "bf16": 5e-2, "pure_fp16": 2e-2, "pure_bf16": 5e-2}


@dataclasses.dataclass(frozen=True)
class LoadedClip:
    """A model ready for inference and the two transforms its inputs must go through."""

    model: Any  # open_clip.CLIP in eval mode, on ``device``
    preprocess: Callable[[Any], "torch.Tensor"]  # PIL image -> CHW tensor (inference transform)
    tokenizer: Callable[[list[str]], "torch.Tensor"]  # captions -> token ids
    device: str
    model_name: str
    precision: str = "fp32"
    trim_text: bool = False  # encode_text may cut tokens after the longest caption (checked exact)

    @property
    def input_dtype(self) -> "torch.dtype":
        """The dtype pixels are cast to: the image tower's weights (fp16/bf16 keep LayerNorms fp32)."""
        import torch

        half = {"fp16": torch.float16, "bf16": torch.bfloat16}
        return half.get(self.precision.removeprefix("pure_"), torch.float32)


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
    *,
    trim_text: bool = True,
    channels_last: bool = False,
    compile_model: bool = False,
) -> LoadedClip:
    """An open_clip model in eval mode with its inference preprocess and tokenizer.

    ``pretrained`` is an open_clip tag (``"openai"``: hub cache or download), a local
    checkpoint path, or None / ``""`` for random weights. ``clipcrawl-tiny`` is the
    exception: a path means a retrained checkpoint of the same architecture, anything else
    (None, ``""``, or a tag such as the ``openai`` default, which it has no weights for)
    means its packaged checkpoint.

    ``precision``: ``fp32`` is exact (on CUDA, TF32 is switched off for this process so that
    GPU and CPU agree); ``tf32`` is fp32 weights with TF32 matmuls and convolutions; ``fp16``
    and ``bf16`` are open_clip's mixed low precision (LayerNorms stay fp32); ``pure_fp16`` and
    ``pure_bf16`` cast every weight, LayerNorms included.
    """
    import open_clip
    import torch

    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {DEVICES} or cuda:N, got {device!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = resolve_device(device)
    if device.startswith("cuda"):
        _set_tf32(precision == "tf32")
    weights = "fp32" if precision == "tf32" else precision
    if model_name == TINY_MODEL_NAME:
        register_tiny_config()
        model, preprocess = _create_tiny(pretrained, device, weights)
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained or None, device=device, precision=weights
        )
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    loaded = LoadedClip(
        model=model, preprocess=preprocess, tokenizer=tokenizer, device=device, model_name=model_name,
        precision=precision,
    )
    if trim_text and text_trim_supported(model):
        loaded = dataclasses.replace(loaded, trim_text=_trim_agrees(loaded))
    if channels_last:
        model.visual.to(memory_format=torch.channels_last)
    if compile_model:
        # Batch sizes and trimmed text lengths vary: dynamic shapes avoid a recompile per size.
        model.visual = torch.compile(model.visual, dynamic=True)
        model.transformer = torch.compile(model.transformer, dynamic=True)
    _LOG.info(
        "loaded CLIP %s (%s) on %s, %s, text %s", model_name, pretrained or "packaged/random", device, precision,
        "trimmed per batch" if loaded.trim_text else "at full context",
    )
    return loaded


def _set_tf32(enabled: bool) -> None:
    """Process-wide: fp32 stays fp32 on the GPU unless ``tf32`` was asked for."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


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


def text_trim_supported(model: Any) -> bool:
    """Whether ``model``'s text tower gives the same pooled feature on tokens cut after the EOT.

    True for open_clip's ``CLIP`` class (ViT-B-32, the tiny model, ...) with a causal mask and
    argmax (end-of-text) pooling; towers without a causal mask, or that pool the last or first
    position, see the padding and must get the full context.
    """
    import open_clip
    import torch

    if type(model) is not open_clip.CLIP or getattr(model, "text_pool_type", None) != "argmax":
        return False
    mask = getattr(model, "attn_mask", None)
    if mask is None or mask.ndim != 2 or mask.shape[0] != model.positional_embedding.shape[0]:
        return False
    causal = torch.full(mask.shape, float("-inf"), device=mask.device).triu(1)
    return bool(torch.equal(mask.float(), causal))


def trimmed_length(tokens: "torch.Tensor") -> int:
    """Positions up to the last end-of-text token of the batch (the EOT is the largest token id)."""
    return int(tokens.argmax(dim=-1).max()) + 1


def encode_text(loaded: LoadedClip, tokens: "torch.Tensor") -> "torch.Tensor":
    """Text features of ``tokens`` (on the model's device): trimmed when ``loaded.trim_text``."""
    if not loaded.trim_text:
        return loaded.model.encode_text(tokens)
    return _encode_text_prefix(loaded.model, tokens[:, : trimmed_length(tokens)])


def _encode_text_prefix(model: Any, text: "torch.Tensor") -> "torch.Tensor":
    """open_clip's ``CLIP.encode_text`` with the positional embedding and causal mask cut to the
    token length: the same computation for every position up to each row's EOT."""
    import torch

    length = text.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]
    if model.text_projection is None:
        return x
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection


def _trim_agrees(loaded: LoadedClip) -> bool:
    """One check per load that the trimmed pass matches open_clip's own on this model."""
    import torch

    probe = ["a photo", "two dogs playing in the snow next to a red wooden house, late afternoon"]
    tokens = loaded.tokenizer(probe).to(loaded.device)
    with torch.inference_mode():
        full = loaded.model.encode_text(tokens).float()
        trimmed = _encode_text_prefix(loaded.model, tokens[:, : trimmed_length(tokens)]).float()
    error = float(((full - trimmed).norm(dim=-1) / full.norm(dim=-1).clamp_min(1e-12)).max())
    if error > _TRIM_TOLERANCE[loaded.precision]:
        _LOG.warning("trimmed text differs from open_clip's (%.2e): encoding at full context", error)
        return False
    return True


def cosine_similarities(image_features: "torch.Tensor", text_features: "torch.Tensor") -> "torch.Tensor":
    """Row ``i`` of the result is cos(image_i, text_i): pairs, not the all-pairs matrix."""
    import torch.nn.functional as F

    if image_features.shape != text_features.shape:
        raise ValueError(f"feature shapes differ: {tuple(image_features.shape)} vs {tuple(text_features.shape)}")
    image = F.normalize(image_features.float(), dim=-1)
    text = F.normalize(text_features.float(), dim=-1)
    return (image * text).sum(dim=-1)
