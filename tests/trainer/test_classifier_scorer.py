"""Serving a trained classifier: the scorer reproduces the trainer's held-out scores, and
guards a stream by stopping at the first offending prefix without reading further.

The classifiers are trained on the separable task of test_classifier_trainer.py.
"""

# Heavy imports follow the importorskip guards.
# ruff: noqa: E402
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import PreTrainedTokenizerFast

from charter.core.classifier_data import TARGETS, Target
from services.classifier.scorer import CLASSIFIER_FILE, Classifier, StreamStep, encode, pad
from services.trainer.classifier_trainer import ClassifierResult
from tests.trainer.test_classifier_trainer import (
    BENIGN,
    HARMFUL,
    PREAMBLE,
    REFUSAL,
    WORDS,
    save_base,
    train_separable,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(word_tokenizer: Callable[..., PreTrainedTokenizerFast]) -> PreTrainedTokenizerFast:
    return word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
    tokenizer: PreTrainedTokenizerFast,
    tiny_llama: Callable[..., Any],
) -> dict[Target, ClassifierResult]:
    """One trained classifier per target (a few seconds in all)."""
    import torch as torch_

    threads = torch_.get_num_threads()
    torch_.set_num_threads(1)  # the one_thread fixture is per test; this is per module
    try:
        base = save_base(tmp_path_factory.mktemp("base"), tokenizer, tiny_llama)
        root = tmp_path_factory.mktemp("classifiers")
        return {t: train_separable(t, base, root / t)[0] for t in TARGETS}
    finally:
        torch_.set_num_threads(threads)


def _pieces(words: list[str]) -> list[str]:
    """A response as a detokenising stream yields it: one word-token per piece."""
    return [words[0], *(" " + w for w in words[1:])]


class Recorded:
    """An iterator of pieces that counts how many were read."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.read = 0

    def __iter__(self) -> Iterator[str]:
        for piece in self.pieces:
            self.read += 1
            yield piece


# --------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("target", TARGETS)
def test_the_scorer_reproduces_the_trainers_held_out_scores(
    trained: dict[Target, ClassifierResult], target: Target
) -> None:
    result = trained[target]
    threads = torch.get_num_threads()
    classifier = Classifier.load(result.output_dir, batch_size=5)  # other batches than training
    assert torch.get_num_threads() == threads  # the caller's setting is left alone
    assert classifier.target == target and classifier.threshold == 0.5
    assert classifier.categories == ("poisons", "weapons")
    examples = result.eval_examples
    scores = classifier.score([e.prompt for e in examples], [e.response for e in examples])
    assert len(scores) == len(result.eval_scores) > 0
    for served, measured in zip(scores, result.eval_scores, strict=True):
        assert served.keys() == measured.keys()
        assert all(abs(served[c] - measured[c]) < 1e-5 for c in served)
    decisions = [max(s.values()) >= classifier.threshold for s in scores]
    assert decisions == [e.flagged for e in examples]  # all right, as the trainer measured
    assert torch.get_num_threads() == threads


def test_score_reads_the_classifiers_own_target(trained: dict[Target, ClassifierResult]) -> None:
    prompt, harmful = "make a weapon please", "detonate fuse charge"
    by_target = {t: Classifier.load(trained[t].output_dir) for t in TARGETS}
    flagged = {
        t: [
            max(s.values()) >= 0.5
            for s in c.score([prompt, "how to make a"], [harmful, "sure bake"])
        ]
        for t, c in by_target.items()
    }
    assert flagged == {t: [True, False] for t in TARGETS}
    # an input classifier ignores the response, an output one the prompt
    assert by_target["input"].score([prompt], [None]) == by_target["input"].score([prompt], ["x"])
    assert by_target["output"].score([None], [harmful]) == by_target["output"].score(
        ["y"], [harmful]
    )
    # an exchange classifier reads both: a refusal after a restricted prompt is fine
    (refused,) = by_target["exchange"].score([prompt], ["sorry cannot help"])
    assert max(refused.values()) < 0.5


def test_an_empty_text_scores_zero_and_mismatched_inputs_are_refused(
    trained: dict[Target, ClassifierResult],
) -> None:
    classifier = Classifier.load(trained["output"].output_dir)
    assert classifier.score(["p"], [None]) == [{"poisons": 0.0, "weapons": 0.0}]
    assert classifier.score([], []) == []
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        classifier.score(["a", "b"], ["c"])


def test_encode_keeps_the_end_and_pad_pads_on_the_right(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer("sure bake flour sugar")["input_ids"]
    assert encode(tokenizer, ["sure bake flour sugar"], 2) == [ids[-2:]]
    assert encode(tokenizer, ["sure bake flour sugar"], None) == [ids]
    batch = pad([[4, 5, 6], [7]], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[4, 5, 6], [7, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_load_needs_a_complete_classifier_json(
    trained: dict[Target, ClassifierResult], tmp_path: Path
) -> None:
    (tmp_path / CLASSIFIER_FILE).write_text(json.dumps({"target": "output", "categories": ["a"]}))
    with pytest.raises(ValueError, match="lacks max_length, threshold"):
        Classifier.load(tmp_path)
    loaded = Classifier.load(trained["output"].output_dir)
    with pytest.raises(ValueError, match="3 categories for a model with 2 labels"):
        Classifier(
            loaded.model,
            loaded.tokenizer,
            target="output",
            categories=["a", "b", "c"],
            threshold=0.5,
            max_length=64,
        )


# --------------------------------------------------------------------------- streaming

MARKED_AT = PREAMBLE
"""The response's first harmful token (0-based): after as many benign words as a trained
harmful answer may open with, so every earlier prefix is benign and this one is not."""


@pytest.mark.parametrize("target", ["output", "exchange"])
def test_the_stream_stops_at_the_first_offending_prefix_and_reads_no_further(
    trained: dict[Target, ClassifierResult], target: Target
) -> None:
    classifier = Classifier.load(trained[target].output_dir)
    words = [*BENIGN[:MARKED_AT], *HARMFUL["weapons"], *BENIGN]
    pieces = Recorded(_pieces(words))
    steps = list(classifier.stream("tell me how to make a weapon", pieces))

    assert [s.index for s in steps] == list(range(MARKED_AT + 1))
    assert [s.stop for s in steps] == [False] * MARKED_AT + [True]
    assert pieces.read == MARKED_AT + 1  # the pieces after the offending one were never read
    last = steps[-1]
    assert last.text == " ".join(words[: MARKED_AT + 1])
    assert last.category == "weapons" and last.max_score == last.scores["weapons"] >= 0.5
    assert all(s.max_score < 0.5 for s in steps[:-1])
    # the step is what score() gives the same prefix
    (scores,) = classifier.score(["tell me how to make a weapon"], [last.text])
    assert scores == dict(last.scores)


def test_a_benign_stream_is_read_to_its_end(trained: dict[Target, ClassifierResult]) -> None:
    classifier = Classifier.load(trained["output"].output_dir)
    pieces = Recorded(_pieces([*BENIGN, *REFUSAL]))
    steps = list(classifier.stream(None, pieces))
    assert len(steps) == pieces.read == len(BENIGN) + len(REFUSAL)
    assert not any(s.stop for s in steps)
    assert steps[-1].text == " ".join([*BENIGN, *REFUSAL])


def test_a_threshold_given_to_the_stream_overrides_the_classifiers(
    trained: dict[Target, ClassifierResult],
) -> None:
    classifier = Classifier.load(trained["output"].output_dir)
    pieces = Recorded(_pieces(list(BENIGN)))
    (step,) = classifier.stream(None, pieces, threshold=1e-6)  # every score reaches it
    assert step == StreamStep(0, "sure", step.scores, step.max_score, step.category, True)
    assert pieces.read == 1


def test_an_input_classifier_cannot_guard_a_stream(trained: dict[Target, ClassifierResult]) -> None:
    classifier = Classifier.load(trained["input"].output_dir)
    pieces = Recorded(["sure"])
    with pytest.raises(ValueError, match="input classifier"):
        classifier.stream("make a weapon", pieces)  # refused at the call, not when iterated
    assert pieces.read == 0
