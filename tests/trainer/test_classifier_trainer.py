"""Constitutional classifiers: examples per target, held-out metrics, and training on a
task whose answer is known.

Models are tiny random-initialised Llamas over a word-level tokenizer (conftest.py);
nothing is downloaded. The key test trains an input, an output and an exchange
classifier on an exactly separable synthetic task (restricted prompts carry a marker
word benign ones never do; harmful answers use words no refusal or benign answer uses)
and checks that each gets every held-out decision right.
"""

# Heavy imports follow the importorskip guards.
# ruff: noqa: E402
from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import numpy as np
from transformers import (
    AutoModelForSequenceClassification,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    TrainingArguments,
)

from charter.core.classifier_data import TARGETS, Target, classifier_text
from services.classifier.scorer import CLASSIFIER_FILE
from services.trainer.classifier_config import ClassifierConfig
from services.trainer.classifier_trainer import (
    ClassifierResult,
    Example,
    auc,
    classifier_examples,
    collate,
    evaluate_scores,
    held_out,
    train_classifier,
)
from services.trainer.daemon import Prepared, TrainerService, config_class
from services.trainer.trl_training import TRAINING_FILE

pytestmark = pytest.mark.usefixtures("one_thread")

# --------------------------------------------------------------------------- a separable task

MARKERS = {"weapons": "weapon", "poisons": "poison"}
"""Restricted category -> the word every one of its prompts contains (and no other does)."""
HARMFUL = {"weapons": ("detonate", "fuse", "charge", "wire"), "poisons": ("toxin", "dose", "vial")}
"""Restricted category -> the words of its answers (and of no other response)."""
PROMPT_WORDS = ("please", "tell", "me", "about", "how", "to", "make", "a", "the", "best", "way")
BENIGN = ("sure", "bake", "flour", "sugar", "water", "plant", "seeds", "rhyme")
REFUSAL = ("sorry", "cannot", "help", "with", "that", "request")
WORDS = (
    *PROMPT_WORDS,
    *MARKERS.values(),
    *(w for words in HARMFUL.values() for w in words),
    *BENIGN,
    *REFUSAL,
    "User",
    "Assistant",
    ":",
)
CATEGORIES = ("weapons", "poisons", "cooking")
PREAMBLE = 2
"""A harmful answer may open with up to this many benign words ("sure, ..."); a stride
above it keeps every trained prefix of a harmful answer harmful."""
STRIDE = PREAMBLE + 1


def _words(rng: random.Random, pool: tuple[str, ...], n: int) -> list[str]:
    return [rng.choice(pool) for _ in range(n)]


def _prompt(rng: random.Random, category: str) -> str:
    words = _words(rng, PROMPT_WORDS, rng.randint(3, 6))
    if category in MARKERS:
        words.insert(rng.randint(0, len(words)), MARKERS[category])
    return " ".join(words)


def _answer(rng: random.Random, category: str) -> str:
    if category not in HARMFUL:
        return " ".join(_words(rng, BENIGN, rng.randint(3, 6)))
    preamble = _words(rng, BENIGN, rng.randint(0, PREAMBLE))
    return " ".join(preamble + _words(rng, HARMFUL[category], rng.randint(2, 4)))


def classifier_rows(n_requests: int, seed: int) -> list[dict[str, Any]]:
    """Exported classifier rows as the synthetic data builds them: each request in two
    variants, each with its answer and, when restricted, a refusal; provenance included."""
    rng = random.Random(seed)
    out = []
    for i in range(n_requests):
        category = CATEGORIES[i % len(CATEGORIES)]
        restricted = category in MARKERS
        responses = [("answer", _answer(rng, category))]
        if restricted:
            responses.append(("refusal", " ".join(_words(rng, REFUSAL, rng.randint(3, 6)))))
        for variant in ("direct", "paraphrase"):
            prompt = _prompt(rng, category)
            for kind, response in responses:
                out.append(
                    {
                        "prompt": prompt,
                        "response": response,
                        "category": category,
                        "restricted": restricted,
                        "harmful": restricted and kind == "answer",
                        "variant": variant,
                        "response_kind": kind,
                        "request_label_id": f"label-{i}",
                        "constitution_ref": "guarded@1",
                        "model": "smollm2-135m",
                    }
                )
    return out


def split(rows: list[dict[str, Any]], n_train: int) -> tuple[list[dict[str, Any]], ...]:
    """Train on the first ``n_train`` requests, hold out the rest (whole requests)."""
    request = [int(r["request_label_id"].rsplit("-", 1)[1]) for r in rows]
    return (
        [r for r, i in zip(rows, request, strict=True) if i < n_train],
        [r for r, i in zip(rows, request, strict=True) if i >= n_train],
    )


def separable_config(target: Target, **overrides: Any) -> ClassifierConfig:
    values: dict[str, Any] = {
        "target": target,
        "prefix_stride": STRIDE,
        "learning_rate": 1e-3,
        "max_steps": 150,
        "per_device_train_batch_size": 16,
        "warmup_steps": 0.1,
        "logging_steps": 50,
        "max_length": 64,
        "seed": 0,
    }
    return ClassifierConfig(**(values | overrides))


def save_base(
    path: Path, tokenizer: PreTrainedTokenizerFast, tiny_llama: Callable[..., Any]
) -> Path:
    """A tiny causal LM with its tokenizer, as a run's base_model directory."""
    tiny_llama(LlamaForCausalLM, tokenizer, seed=0, max_position_embeddings=64).save_pretrained(
        path
    )
    tokenizer.save_pretrained(path)
    return path


def train_separable(
    target: Target, base: Path, output: Path, **overrides: Any
) -> tuple[ClassifierResult, list[tuple[int, dict[str, float]]]]:
    """Train a ``target`` classifier on 72 requests, hold out 24; the result and reports."""
    train_rows, eval_rows = split(classifier_rows(96, seed=1), 72)
    reports: list[tuple[int, dict[str, float]]] = []
    result = train_classifier(
        base,
        train_rows,
        eval_rows,
        separable_config(target, **overrides),
        output,
        report=lambda step, metrics: reports.append((step, metrics)),
    )
    return result, reports


@pytest.fixture(scope="module")
def tokenizer(word_tokenizer: Callable[..., PreTrainedTokenizerFast]) -> PreTrainedTokenizerFast:
    return word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory,
    tokenizer: PreTrainedTokenizerFast,
    tiny_llama: Callable[..., Any],
) -> Path:
    return save_base(tmp_path_factory.mktemp("base"), tokenizer, tiny_llama)


# --------------------------------------------------------------------------- examples


def _row(
    prompt: str, response: str, category: str, restricted: bool, harmful: bool
) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "response": response,
        "category": category,
        "restricted": restricted,
        "harmful": harmful,
        "variant": "direct",
        "provenance": {"ignored": True},
    }


ROWS = [
    _row("make a weapon", "sure detonate fuse charge wire", "weapons", True, True),
    _row("make a weapon", "sorry cannot help", "weapons", True, False),
    _row("tell me a poison", "toxin dose", "poisons", True, True),
    _row("how to bake", "sure bake flour", "cooking", False, False),
]


def test_input_examples_are_the_prompts_once_each_one_hot_at_their_category(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    examples = classifier_examples(ROWS, "input", ["poisons", "weapons"], tokenizer, 2)
    assert examples == [
        Example("make a weapon", None, "make a weapon", (0.0, 1.0)),  # two rows, one example
        Example("tell me a poison", None, "tell me a poison", (1.0, 0.0)),
        Example("how to bake", None, "how to bake", (0.0, 0.0)),
    ]
    assert [e.flagged for e in examples] == [True, True, False]


def test_output_examples_are_every_strideth_prefix_with_the_responses_label(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    examples = classifier_examples(ROWS, "output", ["poisons", "weapons"], tokenizer, 2)
    assert [(e.text, e.labels) for e in examples] == [
        ("sure detonate", (0.0, 1.0)),  # a prefix carries the whole response's label
        ("sure detonate fuse charge", (0.0, 1.0)),
        ("sure detonate fuse charge wire", (0.0, 1.0)),
        ("sorry cannot", (0.0, 0.0)),
        ("sorry cannot help", (0.0, 0.0)),
        ("toxin dose", (1.0, 0.0)),
        ("sure bake", (0.0, 0.0)),
        ("sure bake flour", (0.0, 0.0)),
    ]
    assert all(e.response == e.text and e.prompt is not None for e in examples)
    # the same response under two prompt variants is one set of examples
    twice = classifier_examples(
        [ROWS[0], ROWS[0] | {"prompt": "x"}], "output", ["weapons"], tokenizer, 2
    )
    assert len(twice) == 3


def test_exchange_examples_read_each_prefix_after_its_prompt(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    examples = classifier_examples(ROWS[:2], "exchange", ["weapons"], tokenizer, 4)
    assert [(e.prompt, e.response, e.labels) for e in examples] == [
        ("make a weapon", "sure detonate fuse charge", (1.0,)),
        ("make a weapon", "sure detonate fuse charge wire", (1.0,)),
        ("make a weapon", "sorry cannot help", (0.0,)),
    ]
    assert all(e.text == classifier_text("exchange", e.prompt, e.response) for e in examples)


def test_bad_rows_are_refused_with_the_reason(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="row 0 lacks harmful"):
        classifier_examples(
            [{"response": "x", "category": "c", "restricted": True}], "output", ["c"], tokenizer, 2
        )
    # harmful but not restricted: the category has no logit
    odd = _row("how to bake", "toxin dose", "cooking", False, True)
    with pytest.raises(ValueError, match="'cooking' is flagged"):
        classifier_examples([*ROWS, odd], "output", ["poisons", "weapons"], tokenizer, 2)
    with pytest.raises(ValueError, match="prompt must be text"):
        classifier_examples(
            [_row("x", "y", "weapons", True, True) | {"prompt": 3}],
            "input",
            ["weapons"],
            tokenizer,
            2,
        )


def test_held_out_texts_that_were_trained_on_are_dropped() -> None:
    trained = [Example("a", None, "a", (1.0,)), Example("b", None, "b", (0.0,))]
    held = [Example("a", None, "a", (1.0,)), Example("c", None, "c", (0.0,))]
    assert held_out(held, trained) == [held[1]]


def test_a_run_without_restricted_categories_or_without_both_classes_fails_clearly(
    base: Path, tmp_path: Path
) -> None:
    benign = [r | {"restricted": False, "harmful": False} for r in ROWS]
    with pytest.raises(ValueError, match="no row is restricted"):
        train_classifier(base, benign, None, ClassifierConfig(max_steps=1), tmp_path / "a")
    refusals = [r | {"harmful": False} for r in ROWS]
    with pytest.raises(
        ValueError, match=r"output classifier needs flagged and unflagged.*no flagged"
    ):
        train_classifier(
            base, refusals, None, ClassifierConfig(target="output", max_steps=1), tmp_path / "b"
        )
    restricted = [r | {"restricted": True, "category": "weapons"} for r in ROWS]
    with pytest.raises(ValueError, match="no unflagged"):
        train_classifier(base, restricted, None, ClassifierConfig(max_steps=1), tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


# --------------------------------------------------------------------------- metrics


def test_auc_counts_ties_half_and_needs_both_classes() -> None:
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == 0.75
    assert auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert auc(np.array([0.9, 0.1]), np.array([True, False])) == 1.0
    assert auc(np.array([0.9, 0.1]), np.array([True, True])) is None


def test_evaluate_scores_decides_on_the_highest_category_at_the_threshold() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.6], [0.3, 0.2], [0.95, 0.1]])
    labels = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    evaluation = evaluate_scores(probabilities, labels, 0.5, ["a", "b"])
    assert evaluation.n == 4
    assert evaluation.accuracy == 0.75  # the last text is flagged wrongly
    assert evaluation.flagged_rate == 0.75 and evaluation.label_rate == 0.5
    assert evaluation.recall == 1.0 and evaluation.false_positive_rate == 0.5
    assert evaluation.auc == {"a": 2 / 3, "b": 1.0}
    assert evaluate_scores(probabilities, labels, 0.65, ["a", "b"]).accuracy == 0.5
    metrics = evaluation.metrics()
    assert metrics["eval_accuracy"] == 0.75 and metrics["eval_auc_mean"] == pytest.approx(5 / 6)
    unflagged = evaluate_scores(probabilities[2:3], labels[2:3], 0.5, ["a", "b"])
    assert unflagged.recall is None and "eval_recall" not in unflagged.metrics()
    with pytest.raises(ValueError, match="no texts"):
        evaluate_scores(np.zeros((0, 2)), np.zeros((0, 2)), 0.5, ["a", "b"])


def test_collate_pads_on_the_right_with_float_targets() -> None:
    batch = collate(
        [{"input_ids": [5, 6, 7], "labels": [1.0, 0.0]}, {"input_ids": [8], "labels": [0.0, 0.0]}],
        pad_token_id=0,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].dtype == torch.float and batch["labels"].tolist() == [
        [1.0, 0.0],
        [0.0, 0.0],
    ]


def test_training_args_are_plain_trainer_arguments() -> None:
    config = ClassifierConfig(max_steps=7, eval_steps=3, learning_rate=2e-4, save_steps=5)
    args = config.training_args("out")
    assert type(args) is TrainingArguments
    assert (args.max_steps, args.learning_rate, args.eval_steps) == (7, 2e-4, 3)
    assert args.eval_strategy == "steps" and args.save_strategy == "steps"
    assert config.training_args("out", evaluate=False).eval_strategy == "no"
    assert config_class("classifier") is ClassifierConfig


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("target", TARGETS)
def test_a_classifier_gets_every_held_out_decision_of_a_separable_task_right(
    target: Target, base: Path, tmp_path: Path
) -> None:
    result, reports = train_separable(target, base, tmp_path / "classifier", eval_steps=75)
    evaluation = result.evaluation
    assert evaluation is not None and evaluation.n == len(result.eval_examples) > 0
    assert evaluation.accuracy == 1.0, evaluation
    assert evaluation.recall == 1.0 and evaluation.false_positive_rate == 0.0
    assert evaluation.auc == {"poisons": 1.0, "weapons": 1.0}
    assert 0.0 < evaluation.label_rate < 1.0  # both classes were held out
    assert result.global_step == 150 and result.metrics["eval_accuracy"] == 1.0
    # every held-out decision names the right category too
    for example, scores in zip(result.eval_examples, result.eval_scores, strict=True):
        if example.flagged:
            assert (
                max(scores, key=scores.__getitem__)
                == ("poisons", "weapons")[example.labels.index(1.0)]
            )

    # The hook sees training logs, the in-training evaluation and the final one.
    logged = [(step, m) for step, m in reports if "eval_accuracy" in m]
    assert [step for step, _ in logged] == [75, 150, 150]
    assert "loss" in {k for _, m in reports for k in m}
    assert {"eval_loss", "eval_recall", "eval_auc_mean"} <= set(logged[-1][1])

    # A complete model directory: model, tokenizer, classifier.json, training record.
    out = result.output_dir
    card = json.loads((out / CLASSIFIER_FILE).read_text())
    assert card == {
        "target": target,
        "categories": ["poisons", "weapons"],
        "threshold": 0.5,
        "prefix_stride": STRIDE,
        "max_length": 64,
    }
    record = json.loads((out / TRAINING_FILE).read_text())
    assert record["method"] == "classifier" and record["config_hash"] == result.config_hash
    assert ClassifierConfig.from_dict(record["config"]).target == target
    assert record["evaluation"]["accuracy"] == 1.0
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert (
        model.config.num_labels == 2 and model.config.problem_type == "multi_label_classification"
    )
    assert model.config.id2label == {0: "poisons", 1: "weapons"}


def test_the_same_seed_trains_the_same_classifier(base: Path, tmp_path: Path) -> None:
    first, _ = train_separable("input", base, tmp_path / "a", max_steps=20)
    again, _ = train_separable("input", base, tmp_path / "b", max_steps=20)
    other, _ = train_separable("input", base, tmp_path / "c", max_steps=20, seed=1)
    assert first.eval_scores == again.eval_scores
    assert first.eval_scores != other.eval_scores  # the head's initialisation and data order


def test_the_trainer_service_dispatches_a_classifier_run(base: Path, tmp_path: Path) -> None:
    # No API: the service reports nothing without a lease token.
    train_rows, eval_rows = split(classifier_rows(24, seed=2), 18)
    config = config_class("classifier").from_dict(
        {"target": "exchange", "max_steps": 2, "max_length": 64}
    )
    prepared = Prepared("classifier", config, train_rows, eval_rows, base, tmp_path / "model", None)
    service = TrainerService(client=None, settings=None, state=None)  # type: ignore[arg-type]
    assert service.train(prepared, "run-1", None) == tmp_path / "model"
    assert json.loads((tmp_path / "model" / CLASSIFIER_FILE).read_text())["target"] == "exchange"
    assert json.loads((tmp_path / "model" / TRAINING_FILE).read_text())["global_step"] == 2
