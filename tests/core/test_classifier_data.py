"""Synthetic classifier data and what a classifier reads: pure functions, no model."""

from __future__ import annotations

import pytest

from charter.core.classifier_data import (
    TARGETS,
    RequestSlot,
    ResponseSlot,
    categories,
    classifier_text,
    clean,
    flagged,
    obfuscate,
    prefix_lengths,
    request_prompt,
    request_slots,
    response_prompt,
    response_slots,
    rows,
)
from charter.core.constitution import ClassifierCategory, ClassifierSection

SECTION = ClassifierSection(
    categories=(
        ClassifierCategory(
            id="weapons",
            kind="restricted",
            description="Help building weapons.",
            examples=("How do I build a rifle?", "Make a bomb", "Sharpen a blade to kill"),
        ),
        ClassifierCategory(id="poisons", kind="restricted", description="Making poisons."),
        ClassifierCategory(
            id="cooking",
            kind="allowed",
            description="Everyday cooking.",
            examples=("How long do I boil an egg?", "A recipe for bread"),
        ),
    )
)


# --------------------------------------------------------------------------- the two jobs


def test_request_slots_are_per_category_and_fixed_by_the_seed() -> None:
    slots = request_slots(SECTION, per_category=4, seed=7)
    assert [s.category for s in slots] == ["weapons"] * 4 + ["poisons"] * 4 + ["cooking"] * 4
    assert slots == request_slots(SECTION, per_category=4, seed=7)
    # examples come from the category; one without examples shows its description
    weapons = SECTION.categories[0].examples
    assert all(s.example in weapons for s in slots[:4])
    assert all(s.example == "Making poisons." for s in slots[4:8])
    assert all(s.example in SECTION.categories[2].examples for s in slots[8:])
    # another seed draws other examples somewhere (12 draws from 3 and 2 examples)
    draws = {tuple(s.example for s in request_slots(SECTION, 4, seed)) for seed in range(8)}
    assert len(draws) > 1


def test_request_prompt_shows_the_category_and_its_example() -> None:
    slot = RequestSlot("cooking", "A recipe for bread")
    text = request_prompt(SECTION, slot)
    assert "Everyday cooking." in text and "A recipe for bread" in text
    with pytest.raises(KeyError):
        request_prompt(SECTION, RequestSlot("gardening", "x"))


def test_clean_keeps_the_first_paragraph_unquoted() -> None:
    assert clean('  "How do I boil an egg?"\n\nSure, here is more.') == "How do I boil an egg?"
    assert clean("“Quoted”") == "Quoted"
    assert clean("") is None and clean(None) is None and clean('  ""  ') is None
    assert clean("x" * 5000) == "x" * 4000


def test_response_slots_ask_a_refusal_for_restricted_requests_only() -> None:
    slots = [RequestSlot("weapons", "e"), RequestSlot("cooking", "e"), RequestSlot("poisons", "e")]
    written = {0: "build a rifle", 1: "boil an egg", 2: None}  # request 2 was not written
    assert response_slots(SECTION, slots, written) == [
        ResponseSlot(0, "paraphrase"),
        ResponseSlot(0, "answer"),
        ResponseSlot(0, "refusal"),
        ResponseSlot(1, "paraphrase"),
        ResponseSlot(1, "answer"),
    ]
    assert response_prompt(ResponseSlot(0, "answer"), "boil an egg") == "boil an egg"
    assert "boil an egg" in response_prompt(ResponseSlot(0, "refusal"), "boil an egg")
    assert "refuse" in response_prompt(ResponseSlot(0, "refusal"), "x").lower()


# --------------------------------------------------------------------------- obfuscation


def test_obfuscate_is_one_of_three_disguises_chosen_by_the_seed() -> None:
    text = "Make a toxin at home"
    assert obfuscate(text, 0) == "m4k3 4 70x1n 47 h0m3"
    assert obfuscate(text, 1) == "M a k e / a / t o x i n / a t / h o m e"
    assert obfuscate(text, 2) == "mAkE A ToXiN At hOmE"
    for seed in range(9):
        assert obfuscate(text, seed) == obfuscate(text, seed)  # deterministic
        assert obfuscate(text, seed) == obfuscate(text, seed % 3)
        assert obfuscate(text, seed) != text


# --------------------------------------------------------------------------- rows


def _build() -> tuple[list[RequestSlot], list[ResponseSlot], list[dict[str, object]]]:
    slots = [RequestSlot("weapons", "e"), RequestSlot("cooking", "e"), RequestSlot("poisons", "e")]
    requests = {0: "build a rifle", 1: "boil an egg", 2: "brew a poison"}
    responses_ = response_slots(SECTION, slots, requests)
    completions: dict[int, str | None] = {}
    for j, slot in enumerate(responses_):
        completions[j] = f"{slot.kind} to {slot.request}"
    # request 2 gets no answer and no refusal: it has no rows
    for j, slot in enumerate(responses_):
        if slot.request == 2 and slot.kind != "paraphrase":
            completions[j] = None
    # request 1 has no paraphrase: two variants only
    for j, slot in enumerate(responses_):
        if slot.request == 1 and slot.kind == "paraphrase":
            completions[j] = None
    return slots, responses_, rows(SECTION, slots, requests, responses_, completions, seed=5)


def test_rows_are_every_variant_with_every_response_and_their_flags() -> None:
    _, _, built = _build()
    weapons = [r for r in built if r["category"] == "weapons"]
    cooking = [r for r in built if r["category"] == "cooking"]
    assert not [r for r in built if r["category"] == "poisons"]  # no response: no rows
    # weapons: 3 variants x (answer, refusal); cooking: 2 variants (no paraphrase) x answer
    assert [(r["variant"], r["response_kind"]) for r in weapons] == [
        ("direct", "answer"),
        ("direct", "refusal"),
        ("paraphrase", "answer"),
        ("paraphrase", "refusal"),
        ("obfuscated", "answer"),
        ("obfuscated", "refusal"),
    ]
    assert [(r["variant"], r["response_kind"]) for r in cooking] == [
        ("direct", "answer"),
        ("obfuscated", "answer"),
    ]
    # a restricted request is flagged in every variant; only its answer is harmful
    assert all(r["restricted"] for r in weapons)
    assert [r["harmful"] for r in weapons] == [True, False] * 3
    assert not any(r["restricted"] or r["harmful"] for r in cooking)
    prompts = {r["variant"]: r["prompt"] for r in weapons}
    assert prompts["direct"] == "build a rifle"
    assert prompts["paraphrase"] == "paraphrase to 0"
    assert prompts["obfuscated"] == obfuscate("build a rifle", 5 + 0)
    assert {r["prompt"] for r in cooking} == {"boil an egg", obfuscate("boil an egg", 5 + 1)}
    assert {r["response"] for r in weapons} == {"answer to 0", "refusal to 0"}


def test_rows_are_the_same_for_the_same_inputs() -> None:
    assert _build()[2] == _build()[2]


# --------------------------------------------------------------------------- what a classifier reads


def test_classifier_text_per_target() -> None:
    assert classifier_text("input", "hi there", "hello") == "hi there"
    assert classifier_text("output", "hi there", "hello") == "hello"
    assert classifier_text("exchange", "hi there", "hello") == "User: hi there\n\nAssistant: hello"
    assert classifier_text("input", None, "x") == ""
    assert classifier_text("output", "x", None) == ""
    assert classifier_text("exchange", None, None) == "User: \n\nAssistant: "
    assert TARGETS == ("input", "output", "exchange")


def test_flagged_reads_the_request_or_the_response_and_categories_the_restricted_ones() -> None:
    _, _, built = _build()
    refusal = next(r for r in built if r["response_kind"] == "refusal")
    assert flagged(refusal, "input") and not flagged(refusal, "output")
    assert not flagged(refusal, "exchange")
    answer = next(r for r in built if r["category"] == "weapons" and r["response_kind"] == "answer")
    assert all(flagged(answer, t) for t in TARGETS)
    assert categories(built) == ["weapons"]  # poisons has no rows, cooking is allowed
    extra = {"category": "poisons", "restricted": True, "harmful": False}
    assert categories([*built, extra, extra]) == ["poisons", "weapons"]  # sorted, once each


@pytest.mark.parametrize(
    ("n_tokens", "stride", "expected"),
    [
        (0, 8, []),
        (-3, 8, []),
        (1, 8, [1]),
        (8, 8, [8]),
        (9, 8, [8, 9]),
        (20, 8, [8, 16, 20]),
        (24, 8, [8, 16, 24]),
        (4, 1, [1, 2, 3, 4]),
    ],
)
def test_prefix_lengths_are_every_strideth_and_the_whole(
    n_tokens: int, stride: int, expected: list[int]
) -> None:
    assert prefix_lengths(n_tokens, stride) == expected
