"""Images for CLIP: decoded on CPU threads or with nvJPEG on the GPU, normalized on the device.

open_clip's preprocess is a PIL stage (resize, centre crop, RGB) then ``ToTensor`` and
``Normalize``. The CPU path runs open_clip's own PIL stage on a thread pool (Pillow releases
the GIL while it decodes and resizes) and hands the GPU uint8 pixels, a quarter of the bytes
of float ones; the same ``/255, -mean, /std`` then happens on the device in float32, so the
result equals open_clip's preprocess exactly. Models whose preprocess does not end in
``ToTensor, Normalize`` get open_clip's whole preprocess per image instead (still exact).

The ``nvjpeg`` path decodes JPEGs with ``torchvision.io.decode_jpeg(device="cuda")`` and
resizes them on the GPU (torchvision's antialiased bicubic): close to, not equal to, Pillow's
decoder and resampler; bench/clip_throughput.py measures how close. Non-JPEGs, and every
image when CUDA is absent, take the CPU path.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    import torch

_LOG = logging.getLogger(__name__)

IMAGE_DECODERS = ("cpu", "nvjpeg")
_JPEG_MAGIC = b"\xff\xd8\xff"
_OBJECT_ADDRESS = re.compile(r" <[\w.]+ object at 0x[0-9a-fA-F]+>")
# What decoding can raise for bytes that are not a readable image.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def decode_image(data: bytes | None) -> Image.Image:
    """The stored image bytes as an RGB picture; raises if they are not one."""
    if not data:
        raise ValueError("no image bytes")
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")  # convert() reads every pixel: truncation fails here


def undecodable_message(error: BaseException) -> str:
    """The row's error_message; Pillow's object address is dropped so reruns write the same text."""
    detail = _OBJECT_ADDRESS.sub("", str(error))
    return f"image not decodable at scoring: {type(error).__name__}: {detail}"


@dataclasses.dataclass(frozen=True)
class PixelPlan:
    """open_clip's preprocess split where the pixels become floats."""

    pil_stage: Callable[[Image.Image], Image.Image]  # resize, crop, RGB: open_clip's own steps
    size: tuple[int, int]  # (height, width) the PIL stage produces
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None  # shortest side after Resize, when the stage is exactly Resize + CenterCrop
    interpolation: Any = None


def plan_for(preprocess: Any) -> PixelPlan | None:
    """The split of ``preprocess``, or None when it does not end in ``ToTensor, Normalize``."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) < 3 or not isinstance(steps[-2], T.ToTensor) or not isinstance(steps[-1], T.Normalize):
        return None
    pil_steps = steps[:-2]
    crops = [step for step in pil_steps if isinstance(step, T.CenterCrop)]
    if not crops:
        return None  # the output size would depend on the input
    size = tuple(crops[-1].size) if len(crops[-1].size) == 2 else (crops[-1].size[0],) * 2
    names = [type(step).__name__ for step in pil_steps]
    resize, interpolation = None, None
    if names[:2] == ["Resize", "CenterCrop"] and set(names[2:]) <= {"MaybeConvertMode"}:
        wanted = pil_steps[0].size
        wanted = wanted if isinstance(wanted, int) else (wanted[0] if len(wanted) == 1 else None)
        if wanted is not None and pil_steps[0].max_size is None:
            resize, interpolation = wanted, pil_steps[0].interpolation
    return PixelPlan(
        pil_stage=T.Compose(pil_steps),
        size=size,
        mean=tuple(float(m) for m in steps[-1].mean),
        std=tuple(float(s) for s in steps[-1].std),
        resize=resize,
        interpolation=interpolation,
    )


@dataclasses.dataclass
class Prepared:
    """A chunk's decodable images as one batch, which inputs they are, and why the others failed."""

    pixels: Any  # torch tensor [n, 3, H, W]: uint8 (any strides, any device) or float (fallback)
    ok: list[int]  # input positions of the rows of ``pixels``
    errors: dict[int, str]  # input position -> Undecodable message


class ImagePreparer:
    """Decodes and resizes batches of stored images for one model; thread-safe."""

    def __init__(self, preprocess: Any, device: str, threads: int = 0, decoder: str = "cpu") -> None:
        if decoder not in IMAGE_DECODERS:
            raise ValueError(f"image decoder must be one of {IMAGE_DECODERS}, got {decoder!r}")
        self._preprocess = preprocess
        self._device = device
        self._plan = plan_for(preprocess)
        self._cuda = device.startswith("cuda")
        # Page-locked host buffers let the copy to the GPU run asynchronously; pinning costs a
        # system call per new buffer, so bench/clip_throughput.py measures it both ways.
        self.pin_memory = self._cuda
        self._pool = ThreadPoolExecutor(threads or default_threads(), thread_name_prefix="clip-decode")
        self.decoder = decoder
        if decoder == "nvjpeg" and not (self._cuda and self._plan is not None and self._plan.resize is not None):
            why = "no CUDA device" if not self._cuda else "this model's preprocess is not resize + centre crop"
            _LOG.warning("nvjpeg decoding unavailable (%s): decoding on CPU threads", why)
            self.decoder = "cpu"

    def prepare(self, images: Sequence[bytes | None]) -> Prepared:
        """The chunk's pixels (on the device for nvjpeg, pinned host memory otherwise)."""
        if self.decoder == "nvjpeg":
            return self._prepare_nvjpeg(images)
        return self._prepare_cpu(images)

    def to_model_input(self, prepared: Prepared, dtype: "torch.dtype", channels_last: bool = False) -> "torch.Tensor":
        """Normalized float pixels on the device, as ``ToTensor`` + ``Normalize`` would make them."""
        import torch

        pixels = prepared.pixels.to(self._device, non_blocking=True)
        if pixels.dtype == torch.uint8:
            assert self._plan is not None
            mean = torch.tensor(self._plan.mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
            std = torch.tensor(self._plan.std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
            pixels = pixels.to(torch.float32).div_(255).sub_(mean).div_(std)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return pixels.to(dtype=dtype, memory_format=layout)

    def _prepare_cpu(self, images: Sequence[bytes | None]) -> Prepared:
        import numpy as np
        import torch

        if self._plan is None:
            return self._prepare_whole(images)
        height, width = self._plan.size
        buffer = torch.empty((len(images), height, width, 3), dtype=torch.uint8, pin_memory=self.pin_memory)
        rows = buffer.numpy()

        def fill(position: int) -> str | None:
            try:
                picture = np.asarray(self._plan.pil_stage(decode_image(images[position])))
            except DECODE_ERRORS as error:
                return undecodable_message(error)
            if picture.shape != (height, width, 3):
                return f"image not decodable at scoring: preprocess gave {picture.shape}, not {(height, width, 3)}"
            rows[position] = picture
            return None

        outcomes = list(self._pool.map(fill, range(len(images))))
        errors = {i: message for i, message in enumerate(outcomes) if message is not None}
        ok = [i for i in range(len(images)) if i not in errors]
        if errors:
            buffer = buffer[torch.tensor(ok, dtype=torch.long)]
        # NHWC in memory, NCHW to torch: the copy to the GPU keeps these (channels-last) strides.
        return Prepared(pixels=buffer.permute(0, 3, 1, 2), ok=ok, errors=errors)

    def _prepare_whole(self, images: Sequence[bytes | None]) -> Prepared:
        """open_clip's preprocess per image, for preprocess pipelines ``plan_for`` cannot split."""
        import torch

        def run(position: int) -> Any:
            try:
                return self._preprocess(decode_image(images[position]))
            except DECODE_ERRORS as error:
                return undecodable_message(error)

        outcomes = list(self._pool.map(run, range(len(images))))
        errors = {i: out for i, out in enumerate(outcomes) if isinstance(out, str)}
        ok = [i for i in range(len(images)) if i not in errors]
        pixels = torch.stack([outcomes[i] for i in ok]) if ok else torch.empty(0)
        return Prepared(pixels=pixels, ok=ok, errors=errors)

    def _prepare_nvjpeg(self, images: Sequence[bytes | None]) -> Prepared:
        import torch

        jpegs = [i for i, data in enumerate(images) if data and data[:3] == _JPEG_MAGIC]
        decoded: Any = None
        if jpegs:
            try:
                decoded = decode_resize_tensors([images[i] for i in jpegs], self._plan, self._device)
            except RuntimeError as error:  # one bad JPEG fails the whole call: let Pillow sort them out
                _LOG.info("nvjpeg batch failed (%s); decoding its %d images on CPU threads", error, len(jpegs))
                jpegs = []
        rest = [i for i in range(len(images)) if i not in set(jpegs)]
        on_cpu = self._prepare_cpu([images[i] for i in rest]) if rest else None
        parts, ok, errors = [], [], {}
        if jpegs:
            parts.append(decoded)
            ok += jpegs
        if on_cpu is not None:
            errors = {rest[i]: message for i, message in on_cpu.errors.items()}
            if on_cpu.ok:
                parts.append(on_cpu.pixels.to(self._device, non_blocking=True))
                ok += [rest[i] for i in on_cpu.ok]
        pixels = torch.cat(parts) if len(parts) > 1 else (parts[0] if parts else torch.empty(0))
        return Prepared(pixels=pixels, ok=ok, errors=errors)


def decode_resize_tensors(datas: Sequence[bytes], plan: PixelPlan, device: str) -> "torch.Tensor":
    """JPEGs decoded by torchvision on ``device`` (nvJPEG on CUDA, libjpeg on CPU), resized and
    centre-cropped like ``plan`` with torchvision's tensor ops: uint8 [n, 3, H, W] on ``device``."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as F

    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec; decode_jpeg still works
        warnings.simplefilter("ignore", DeprecationWarning)
        pictures = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    out = torch.empty((len(pictures), 3, *plan.size), dtype=torch.uint8, device=device)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for position, picture in enumerate(pictures):
        by_shape.setdefault(tuple(picture.shape), []).append(position)
    for positions in by_shape.values():  # one resize per input size (stored images mostly share one)
        batch = torch.stack([pictures[i] for i in positions])
        batch = F.resize(batch, [plan.resize], interpolation=plan.interpolation, antialias=True)
        out[torch.tensor(positions, device=device)] = F.center_crop(batch, list(plan.size))
    return out
