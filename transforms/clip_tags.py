"""Prompt tags: zero-shot CLIP scores such as ``unsafe`` or ``watermark``, from the same image features.

A tag is a set of positive prompts against a set of neutral ones. Its score for an image is
the softmax probability (at CLIP's usual logit scale of 100) that falls on the positive
prompts, in [0, 1]. No extra weights and no second image pass: the image features that give
the similarity are reused, and the prompts are encoded once per model load.

These are heuristics, not classifiers: LAION-5B's NSFW and watermark columns came from
detectors trained for the purpose, and a prompt set is only as good as its wording and the
model's notion of it. Use a tag to sort or sample, check its precision on your data, and do not
treat a low ``tag_unsafe`` as a safety guarantee.

Syntax of ``--clip_tags``: tags separated by ``;``. A tag is a built-in name (``unsafe``,
``watermark``, ``text``) or ``name=positive|positive[~neutral|neutral]``; without ``~`` the
default neutral prompts are used. Names become parquet columns ``tag_{name}`` (float32).
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from clipcrawl.transforms.clip_model import LoadedClip

TAG_COLUMN_PREFIX = "tag_"
LOGIT_SCALE = 100.0  # CLIP's trained temperature (exp(4.6052)); fixed so scores mean the same across models
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")

NEUTRAL_PROMPTS: tuple[str, ...] = (
    "a photo",
    "an image",
    "a picture of something",
    "an ordinary photo",
)


@dataclasses.dataclass(frozen=True)
class TagSpec:
    """One tag: the prompts whose probability is its score, and those it competes with."""

    name: str
    positive: tuple[str, ...]
    neutral: tuple[str, ...] = NEUTRAL_PROMPTS

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"tag name {self.name!r} must match {_NAME.pattern} (it becomes a parquet column)")
        if not self.positive or not self.neutral:
            raise ValueError(f"tag {self.name!r} needs at least one positive and one neutral prompt")
        if any(not prompt.strip() for prompt in self.positive + self.neutral):
            raise ValueError(f"tag {self.name!r} has an empty prompt")

    @property
    def column(self) -> str:
        return f"{TAG_COLUMN_PREFIX}{self.name}"


BUILTIN_TAGS: dict[str, TagSpec] = {
    spec.name: spec
    for spec in (
        TagSpec(
            "unsafe",
            positive=(
                "an explicit nude photo",
                "a pornographic image",
                "a photo of graphic violence",
                "a photo of a bloody injury",
            ),
            neutral=NEUTRAL_PROMPTS + ("a photo of people wearing clothes", "a family-friendly image"),
        ),
        TagSpec(
            "watermark",
            positive=(
                "a photo with a watermark",
                "a stock photo with a watermark across it",
                "an image with a semi-transparent logo over it",
            ),
            neutral=NEUTRAL_PROMPTS + ("a clean photo without any text",),
        ),
        TagSpec(
            "text",
            positive=("an image of text", "a screenshot of a document", "a page of printed text"),
        ),
    )
}


def parse_tags(value: str | None) -> tuple[TagSpec, ...]:
    """``unsafe;watermark;red=a red circle|a red star~a blue circle`` -> tag specs, in order."""
    if value is None or not value.strip():
        return ()
    specs: list[TagSpec] = []
    for item in (part.strip() for part in value.split(";")):
        if not item:
            continue
        if "=" not in item:
            if item not in BUILTIN_TAGS:
                raise ValueError(f"unknown tag {item!r}: built-ins are {sorted(BUILTIN_TAGS)}, or give name=prompt|...")
            specs.append(BUILTIN_TAGS[item])
            continue
        name, prompts = (part.strip() for part in item.split("=", 1))
        positive, _, neutral = prompts.partition("~")
        specs.append(
            TagSpec(
                name=name,
                positive=_prompts(positive),
                neutral=_prompts(neutral) if neutral.strip() else NEUTRAL_PROMPTS,
            )
        )
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"tag names repeat: {names}")
    return tuple(specs)


def _prompts(text: str) -> tuple[str, ...]:
    return tuple(prompt.strip() for prompt in text.split("|") if prompt.strip())


def tag_columns(specs: tuple[TagSpec, ...]) -> tuple[str, ...]:
    return tuple(spec.column for spec in specs)


class TagBank:
    """The tags' prompt features for one loaded model, and the scores they give image features."""

    def __init__(self, loaded: "LoadedClip", specs: tuple[TagSpec, ...]) -> None:
        import torch
        import torch.nn.functional as F

        from clipcrawl.transforms.clip_model import encode_text

        self.names = tuple(spec.name for spec in specs)
        prompts = [prompt for spec in specs for prompt in spec.positive + spec.neutral]
        with torch.inference_mode():
            tokens = loaded.tokenizer(prompts).to(loaded.device)
            self._prompts = F.normalize(encode_text(loaded, tokens).float(), dim=-1)  # [P, D]
        self._groups: list[tuple[slice, int]] = []  # (the tag's prompt rows, how many are positive)
        start = 0
        for spec in specs:
            width = len(spec.positive) + len(spec.neutral)
            self._groups.append((slice(start, start + width), len(spec.positive)))
            start += width

    def scores(self, image_features: "torch.Tensor") -> "torch.Tensor":
        """[n, tags] probabilities from L2-normalized float32 image features [n, D]."""
        import torch

        logits = LOGIT_SCALE * image_features @ self._prompts.T
        columns = []
        for rows, positives in self._groups:
            probabilities = logits[:, rows].softmax(dim=-1)
            columns.append(probabilities[:, :positives].sum(dim=-1).clamp_(0.0, 1.0))
        return torch.stack(columns, dim=-1)


def scores_as_dicts(names: tuple[str, ...], values: Any) -> list[dict[str, float]]:
    """Rows of a [n, tags] CPU array as ``{name: score}`` dicts (the Sample's ``tags``)."""
    return [dict(zip(names, (float(v) for v in row))) for row in values.tolist()]
