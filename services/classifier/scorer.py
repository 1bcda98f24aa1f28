"""Serving a trained constitutional classifier: score texts, or guard a stream.

A classifier run (:mod:`services.trainer.classifier_trainer`) saves a sequence
classifier, its tokenizer and ``classifier.json`` (what it reads, its categories, its
threshold and token limit). :class:`Classifier` loads them once and scores texts built
by :func:`charter.core.classifier_data.classifier_text` for its own target, encoded by
:func:`encode` and padded by :func:`pad`: the functions the trainer uses, so a served
score is the score the held-out metrics measured.

:meth:`Classifier.stream` guards a response as it is generated (Sharma et al. 2025):
each arriving piece extends the response, the prefix so far is scored, and the stream
stops at the first prefix whose highest category score reaches the threshold, before
any later piece is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from charter.core.classifier_data import TARGETS, Target, classifier_text, verdict

__all__ = ["CLASSIFIER_FILE", "Classifier", "StreamStep", "encode", "pad"]

CLASSIFIER_FILE = "classifier.json"
"""What a classifier reads and decides, beside its weights: target, categories, threshold,
prefix_stride and max_length."""


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int | None
) -> list[list[int]]:
    """Token ids of ``texts``; a longer text keeps its last ``max_length`` tokens.

    The end is kept because the model pools its score at the last token, and the end of
    a response prefix is what a stream has just produced.
    """
    if not texts:
        return []
    ids: list[list[int]] = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    return [row[-max_length:] if max_length else row for row in ids]


def pad(ids: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, padded on the right: with causal attention
    no real token sees a pad, so a text scores the same in any batch (the model pools at
    each row's last non-pad token)."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@dataclass(frozen=True, slots=True)
class StreamStep:
    """The guard's verdict after one piece of a streamed response."""

    index: int
    """The piece just read (0-based)."""
    text: str
    """The response so far, this piece included."""
    scores: Mapping[str, float]
    """Each category's score of the prefix."""
    max_score: float
    category: str
    """The highest-scoring category."""
    stop: bool
    """``max_score`` reached the threshold: the stream ends here."""


class Classifier:
    """A trained classifier in eval mode, scoring batches of texts on its own target."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        target: Target,
        categories: Sequence[str],
        threshold: float,
        max_length: int | None,
        batch_size: int = 16,
    ) -> None:
        if target not in TARGETS:
            raise ValueError(f"unknown classifier target {target!r}")
        if len(categories) != model.config.num_labels:
            raise ValueError(
                f"{len(categories)} categories for a model with {model.config.num_labels} labels"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError("the classifier's tokenizer has no pad token")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), not {threshold}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.target: Target = target
        self.categories = tuple(categories)
        self.threshold = threshold
        self.max_length = max_length
        self.batch_size = batch_size

    @classmethod
    def load(
        cls, path: str | Path, *, device: str | torch.device | None = None, batch_size: int = 16
    ) -> Self:
        """The classifier a classifier run saved in ``path`` (on ``device``, default where
        ``transformers`` loads it)."""
        path = Path(path)
        card = _read_card(path / CLASSIFIER_FILE)
        model = AutoModelForSequenceClassification.from_pretrained(path)
        if device is not None:
            model = model.to(device)
        return cls(
            model,
            AutoTokenizer.from_pretrained(path),
            target=card["target"],
            categories=card["categories"],
            threshold=card["threshold"],
            max_length=card["max_length"],
            batch_size=batch_size,
        )

    def score(
        self, prompts: Sequence[str | None], responses: Sequence[str | None]
    ) -> list[dict[str, float]]:
        """Each category's score (a sigmoid) of every ``(prompt, response)``, in order.

        What is read depends on the target: an input classifier ignores the responses, an
        output one the prompts. An empty text has nothing to flag: every score is 0.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        texts = [
            classifier_text(self.target, p, r) for p, r in zip(prompts, responses, strict=True)
        ]
        return self.score_texts(texts)

    def score_texts(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Each category's score of texts already made by ``classifier_text``."""
        scores: list[dict[str, float]] = [dict.fromkeys(self.categories, 0.0) for _ in texts]
        ids = encode(self.tokenizer, texts, self.max_length)
        rows = [i for i, (text, row) in enumerate(zip(texts, ids, strict=True)) if text and row]
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            probabilities = self._probabilities([ids[i] for i in batch])
            for i, row in zip(batch, probabilities.tolist(), strict=True):
                scores[i] = dict(zip(self.categories, row, strict=True))
        return scores

    def stream(
        self, prompt: str | None, pieces: Iterable[str], threshold: float | None = None
    ) -> Iterator[StreamStep]:
        """Score a response piece by piece as it arrives; one step per piece.

        The last step yielded is the first whose highest score reaches ``threshold``
        (default: the classifier's), and no later piece is read: a generator of pieces
        is left where it is. An input classifier reads no response, so it cannot guard
        one.
        """
        if self.target == "input":
            raise ValueError("an input classifier scores prompts; it cannot guard a stream")
        limit = self.threshold if threshold is None else threshold
        return self._steps(prompt, iter(pieces), limit)

    def _steps(
        self, prompt: str | None, pieces: Iterator[str], limit: float
    ) -> Iterator[StreamStep]:
        text = ""
        for index, piece in enumerate(pieces):
            text += piece
            step = self.step(prompt, text, index, limit)
            yield step
            if step.stop:
                return  # before asking for the next piece

    def step(self, prompt: str | None, text: str, index: int, limit: float) -> StreamStep:
        """The verdict on a streamed response ``text`` so far (piece ``index`` just read)."""
        (scores,) = self.score([prompt], [text])
        decided = verdict(scores, limit)
        return StreamStep(index, text, scores, decided.score, decided.category, decided.flagged)

    def _probabilities(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in pad(ids, self.tokenizer.pad_token_id).items()}
        with torch.inference_mode():
            logits = self.model(**batch, use_cache=False).logits
        return torch.sigmoid(logits.float()).cpu()


def _read_card(path: Path) -> dict[str, Any]:
    """``classifier.json``, checked: what the scorer must agree on with the trainer."""
    card = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(card, dict):
        raise ValueError(f"{path.name} is not an object")
    missing = sorted({"target", "categories", "threshold", "max_length"} - set(card))
    if missing:
        raise ValueError(f"{path.name} lacks {', '.join(missing)}")
    categories = card["categories"]
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"{path.name}: categories must be a non-empty list")
    return card
