"""Constitutional classifiers (Sharma et al. 2025): a causal LM fine-tuned with a fresh
sequence-classification head to flag restricted content, one score per category.

The rows are a classifier dataset (``charter.core.classifier_data``): a user prompt, a
response, the category the prompt was written for, whether the prompt is restricted and
whether the response is harmful. What is read and which flag is learnt depend on the
run's target:

* ``input``: the prompt, labelled ``restricted``. A prompt that appears with several
  responses is one example.
* ``output``: every ``prefix_stride``-th token prefix of the response (and the whole
  response), each labelled ``harmful`` like the full response, so that the classifier
  can stop a stream at the first prefix that scores over the threshold instead of
  after the harm is done.
* ``exchange``: the same prefixes, read after their prompt.

The text of an example is :func:`~charter.core.classifier_data.classifier_text`, and it
is encoded and padded by :mod:`services.classifier.scorer`'s functions, so the served
classifier reads exactly what was trained and measured. Each restricted category has
its own logit and sigmoid (``multi_label_classification``, BCE-with-logits); the target
is one-hot at the row's category when the row is flagged, all zeros otherwise, so one
classifier learns every category and reports which one fired. A text is flagged when its
highest score reaches ``threshold``.

The plain ``transformers`` ``Trainer`` trains; this module builds the examples, its
collator and the held-out metrics (accuracy of the flag decision, the flagged rate, recall
and false-positive rate, per-category AUC), and saves ``classifier.json`` beside the
model. The ``report`` hook and the training record come from
``services.trainer.trl_training``, shared with the other runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    set_seed,
)

from charter.core.classifier_data import (
    Target,
    categories,
    classifier_text,
    flagged,
    prefix_lengths,
)
from services.classifier.scorer import CLASSIFIER_FILE, encode, pad
from services.trainer.classifier_config import ClassifierConfig
from services.trainer.trl_training import (
    Report,
    Rows,
    TrainResult,
    trainer_callbacks,
    write_training_record,
)

REQUIRED: dict[Target, tuple[str, ...]] = {
    "input": ("prompt", "category", "restricted"),
    "output": ("response", "category", "restricted", "harmful"),
    "exchange": ("prompt", "response", "category", "restricted", "harmful"),
}
"""The columns each target reads (``restricted`` names the categories); others are ignored."""


# --------------------------------------------------------------------------- examples


@dataclass(frozen=True, slots=True)
class Example:
    """One text a classifier is trained or evaluated on, with what it was made from."""

    prompt: str | None
    response: str | None
    """The response prefix (output and exchange); None for an input classifier."""
    text: str
    """``classifier_text(target, prompt, response)``."""
    labels: tuple[float, ...]
    """One target per category: 1 at the row's category when flagged, else 0."""

    @property
    def flagged(self) -> bool:
        return any(self.labels)


def _text(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"a row's {key} must be text or null, not {type(value).__name__}")
    return value


def check_rows(rows: Sequence[Mapping[str, Any]], target: Target) -> None:
    """Every row has the columns ``target`` reads (a clear error instead of a KeyError)."""
    for i, row in enumerate(rows):
        missing = [c for c in REQUIRED[target] if c not in row]
        if missing:
            raise ValueError(
                f"row {i} lacks {', '.join(missing)} (a {target} classifier reads them)"
            )


def _labels(row: Mapping[str, Any], target: Target, index: Mapping[str, int]) -> tuple[float, ...]:
    labels = [0.0] * len(index)
    if flagged(row, target):
        category = row["category"]
        if category not in index:
            raise ValueError(
                f"a row of category {category!r} is flagged, but no row marks {category!r} "
                "as restricted"
            )
        labels[index[category]] = 1.0
    return tuple(labels)


def classifier_examples(
    rows: Sequence[Mapping[str, Any]],
    target: Target,
    categories_: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    prefix_stride: int,
) -> list[Example]:
    """The examples ``rows`` make for a ``target`` classifier over ``categories_``, in row
    order. An identical text with identical labels is one example (a prompt recurs with
    each of its responses, a response with each variant of its prompt); an empty text
    is none."""
    check_rows(rows, target)
    index = {c: i for i, c in enumerate(categories_)}
    if target == "input":
        made = _prompt_examples(rows, index)
    else:
        made = _prefix_examples(rows, target, index, tokenizer, prefix_stride)
    seen: set[tuple[str, tuple[float, ...]]] = set()
    out = []
    for example in made:
        key = (example.text, example.labels)
        if example.text and key not in seen:
            seen.add(key)
            out.append(example)
    return out


def _prompt_examples(rows: Sequence[Mapping[str, Any]], index: Mapping[str, int]) -> list[Example]:
    """Each row's prompt, labelled by whether its request is restricted."""
    out = []
    for row in rows:
        prompt = _text(row, "prompt")
        text = classifier_text("input", prompt, None)
        out.append(Example(prompt, None, text, _labels(row, "input", index)))
    return out


def _prefix_examples(
    rows: Sequence[Mapping[str, Any]],
    target: Target,
    index: Mapping[str, int],
    tokenizer: PreTrainedTokenizerBase,
    stride: int,
) -> list[Example]:
    """Every ``stride``-th token prefix of each response (and the whole response), as
    text: the response is tokenised alone and its first ``k`` tokens decoded, so a
    prefix ends on a token boundary as a streamed prefix does."""
    responses = [_text(r, "response") or "" for r in rows]
    token_ids = tokenizer(responses, add_special_tokens=False)["input_ids"] if rows else []
    out = []
    for row, ids in zip(rows, token_ids, strict=True):
        prompt = _text(row, "prompt")
        labels = _labels(row, target, index)
        for k in prefix_lengths(len(ids), stride):
            prefix = tokenizer.decode(ids[:k])
            out.append(Example(prompt, prefix, classifier_text(target, prompt, prefix), labels))
    return out


def held_out(examples: Sequence[Example], training: Sequence[Example]) -> list[Example]:
    """``examples`` without the texts trained on: the split is by row, and a prompt (or
    a response) shared by a training row and a held-out row would otherwise be
    measured as if unseen."""
    trained = {e.text for e in training}
    return [e for e in examples if e.text not in trained]


def require_both_classes(examples: Sequence[Example], target: Target) -> None:
    """A classifier learns nothing from one class: refuse before any training."""
    n_flagged = sum(e.flagged for e in examples)
    if n_flagged == 0 or n_flagged == len(examples):
        which = "no flagged" if n_flagged == 0 else "no unflagged"
        column = "restricted" if target == "input" else "harmful"
        raise ValueError(
            f"a {target} classifier needs flagged and unflagged texts ({column} true and "
            f"false); the training rows give {len(examples)} texts and {which} ones"
        )


def tokenised(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int | None
) -> tuple[list[Example], Dataset]:
    """The examples that encode to at least one token, and their ``input_ids`` and
    ``labels`` as a dataset (in the same order)."""
    ids = encode(tokenizer, [e.text for e in examples], max_length)
    kept = [(e, row) for e, row in zip(examples, ids, strict=True) if row]
    dataset = Dataset.from_dict(
        {"input_ids": [row for _, row in kept], "labels": [list(e.labels) for e, _ in kept]}
    )
    return [e for e, _ in kept], dataset


def collate(features: list[dict[str, Any]], *, pad_token_id: int) -> dict[str, torch.Tensor]:
    """A batch padded as the scorer pads, with float targets for BCE."""
    batch = pad([f["input_ids"] for f in features], pad_token_id)
    batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float)
    return batch


# --------------------------------------------------------------------------- evaluation


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None unless both
    classes occur."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    _, inverse, counts = np.unique(scores[order], return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based, ties share their mean
    ranks = np.empty(len(scores))
    ranks[order] = average_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass(frozen=True)
class ClassifierEvaluation:
    """Held-out quality of the flag decision (highest score >= threshold)."""

    n: int
    """Texts scored."""
    threshold: float
    accuracy: float
    """Share of texts whose decision equals their label (flagged or not)."""
    flagged_rate: float
    """Share of texts the classifier flags."""
    label_rate: float
    """Share of texts that are flagged by their label."""
    recall: float | None
    """Share of the labelled-flagged texts it flags; None without any."""
    false_positive_rate: float | None
    """Share of the unflagged texts it flags (what over-refusal costs); None without any."""
    auc: dict[str, float] = field(default_factory=dict)
    """Per category with both classes held out: ROC AUC of its score."""

    def metrics(self, prefix: str = "eval_") -> dict[str, float]:
        """Flat scalar metrics, e.g. for ``report``; undefined ones are left out, and the
        per-category AUCs are summarised by their mean (a report has few keys)."""
        values: dict[str, float | None] = {
            "n": float(self.n),
            "accuracy": self.accuracy,
            "flagged_rate": self.flagged_rate,
            "label_rate": self.label_rate,
            "recall": self.recall,
            "false_positive_rate": self.false_positive_rate,
            "auc_mean": float(np.mean(list(self.auc.values()))) if self.auc else None,
        }
        return {f"{prefix}{k}": v for k, v in values.items() if v is not None}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_scores(
    probabilities: np.ndarray, labels: np.ndarray, threshold: float, categories_: Sequence[str]
) -> ClassifierEvaluation:
    """The evaluation of ``probabilities`` (texts x categories) against 0/1 ``labels``."""
    if len(probabilities) == 0:
        raise ValueError("nothing to evaluate: no texts")
    decided = probabilities.max(axis=1) >= threshold
    truth = labels.max(axis=1) > 0.5
    aucs = {
        c: value
        for i, c in enumerate(categories_)
        if (value := auc(probabilities[:, i], labels[:, i] > 0.5)) is not None
    }
    return ClassifierEvaluation(
        n=len(probabilities),
        threshold=threshold,
        accuracy=float((decided == truth).mean()),
        flagged_rate=float(decided.mean()),
        label_rate=float(truth.mean()),
        recall=float(decided[truth].mean()) if truth.any() else None,
        false_positive_rate=float(decided[~truth].mean()) if (~truth).any() else None,
        auc=aucs,
    )


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return torch.sigmoid(torch.from_numpy(np.asarray(logits, dtype=np.float32))).numpy()


def _logits(predictions: Any) -> np.ndarray:
    """The logits among what ``Trainer`` predicted (a tuple when the model returns more)."""
    return np.asarray(predictions[0] if isinstance(predictions, tuple) else predictions)


def _compute_metrics(
    prediction: EvalPrediction, *, threshold: float, categories_: Sequence[str]
) -> dict[str, float]:
    """``Trainer``'s hook for the in-training evaluations (it adds the ``eval_`` prefix)."""
    probabilities = _sigmoid(_logits(prediction.predictions))
    labels = np.asarray(prediction.label_ids)
    return evaluate_scores(probabilities, labels, threshold, categories_).metrics(prefix="")


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class ClassifierResult(TrainResult):
    evaluation: ClassifierEvaluation | None
    """Held-out quality; None without held-out texts."""
    eval_examples: tuple[Example, ...] = ()
    """The held-out texts evaluated, in order."""
    eval_scores: tuple[dict[str, float], ...] = ()
    """Each held-out text's category scores, as the trained model gave them."""


def _load(
    base: str | Path, categories_: Sequence[str], seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model with a fresh head of one logit per category, and its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:  # pad with EOS, as the PM does: pads are masked out
        if tokenizer.eos_token is None:
            raise ValueError("the base model's tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    set_seed(seed)  # the new head is initialised here, before the Trainer seeds anything
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(categories_),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(categories_)),
        label2id={c: i for i, c in enumerate(categories_)},
    )
    model.config.pad_token_id = tokenizer.pad_token_id  # the head pools at the last non-pad
    model.config.use_cache = False  # one forward pass per text: a cache only costs memory
    return model, tokenizer


def train_classifier(
    base: str | Path,
    train_rows: Rows,
    eval_rows: Rows | None,
    config: ClassifierConfig,
    output_dir: str | Path,
    *,
    report: Report | None = None,
    callbacks: list[TrainerCallback] | None = None,
    resume_from_checkpoint: str | None = None,
) -> ClassifierResult:
    """Train a ``config.target`` classifier from the causal LM ``base`` (a model
    directory) on classifier rows, evaluate it on the held-out rows, save it to
    ``output_dir`` with its tokenizer and ``classifier.json``.

    The categories are the restricted ones of all rows, sorted. ``ValueError`` when
    there are none, or when the training rows are all flagged or all unflagged.
    """
    output_dir = Path(output_dir)
    train = [dict(r) for r in train_rows]
    held = [dict(r) for r in eval_rows] if eval_rows is not None else []
    categories_ = categories(train + held)
    if not categories_:
        raise ValueError("no row is restricted: a classifier needs restricted categories")
    model, tokenizer = _load(base, categories_, config.seed)
    build = partial(
        classifier_examples,
        target=config.target,
        categories_=categories_,
        tokenizer=tokenizer,
        prefix_stride=config.prefix_stride,
    )
    train_examples, train_dataset = tokenised(build(train), tokenizer, config.max_length)
    require_both_classes(train_examples, config.target)
    eval_examples, eval_dataset = tokenised(
        held_out(build(held), train_examples), tokenizer, config.max_length
    )
    evaluate = len(eval_examples) > 0
    trainer = Trainer(
        model=model,
        args=config.training_args(output_dir, evaluate=evaluate),
        data_collator=partial(collate, pad_token_id=tokenizer.pad_token_id),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if evaluate else None,
        processing_class=tokenizer,
        compute_metrics=partial(
            _compute_metrics, threshold=config.threshold, categories_=categories_
        ),
        callbacks=trainer_callbacks(callbacks, report),
    )
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = {k: float(v) for k, v in result.metrics.items()}
    evaluation, scores = None, ()
    if evaluate:
        evaluation, scores, eval_metrics = _final_evaluation(
            trainer, eval_dataset, config, categories_
        )
        metrics |= eval_metrics
        if report is not None:
            report(trainer.state.global_step, eval_metrics)
    trainer.save_model(str(output_dir))
    step = trainer.state.global_step
    if trainer.is_world_process_zero():  # one writer under several processes
        _write_card(output_dir, config, categories_)
        write_training_record(
            output_dir,
            "classifier",
            config,
            step,
            metrics=metrics,
            evaluation=None if evaluation is None else evaluation.as_dict(),
        )
    return ClassifierResult(
        output_dir,
        config.config_hash(),
        step,
        metrics,
        evaluation,
        tuple(eval_examples) if evaluate else (),
        scores,
    )


def _final_evaluation(
    trainer: Trainer, dataset: Dataset, config: ClassifierConfig, categories_: Sequence[str]
) -> tuple[ClassifierEvaluation, tuple[dict[str, float], ...], dict[str, float]]:
    """The trained model on the held-out texts: its evaluation, each text's scores, and
    the metrics to report (the evaluation's and the held-out loss)."""
    prediction = trainer.predict(dataset, metric_key_prefix="eval")
    probabilities = _sigmoid(_logits(prediction.predictions))
    evaluation = evaluate_scores(
        probabilities, np.asarray(dataset["labels"]), config.threshold, categories_
    )
    scores = tuple(dict(zip(categories_, row, strict=True)) for row in probabilities.tolist())
    loss = (prediction.metrics or {}).get("eval_loss")
    extra = {} if loss is None else {"eval_loss": float(loss)}
    return evaluation, scores, evaluation.metrics() | extra


def _write_card(output_dir: Path, config: ClassifierConfig, categories_: Sequence[str]) -> None:
    """``classifier.json``: what the scorer needs to read and decide as the trainer did."""
    card = {
        "target": config.target,
        "categories": list(categories_),
        "threshold": config.threshold,
        "prefix_stride": config.prefix_stride,
        "max_length": config.max_length,
    }
    (output_dir / CLASSIFIER_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
