"""``charter.core.refs.parse_ref``: the one ``name@version`` parser."""

from __future__ import annotations

import re

import pytest

from charter.core import constitution, refs

LOWER = r"[a-z][a-z0-9-]*"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("default", ("default", None)),
        ("default@3", ("default", 3)),
        ("  default@12 \n", ("default", 12)),  # surrounding whitespace is ignored
        ("a-b@999999999", ("a-b", 999_999_999)),  # nine digits: the largest version
    ],
)
def test_names_and_versions(ref: str, expected: tuple[str, int | None]) -> None:
    assert refs.parse_ref(ref, LOWER, what="thing") == expected
    assert refs.parse_ref(ref, re.compile(LOWER), what="thing") == expected


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "@1",
        "default@",
        "default@0",
        "default@01",
        "default@-1",
        "default@1.0",
        "default@1e3",
        "default@x",
        "default@1@2",
        "default@ 1",
        "default @1",
        "default@1234567890",  # ten digits can overflow the column
        "default@²",  # str.isdigit() is True, int() refuses it
        "default@\u0661",  # ARABIC-INDIC DIGIT ONE
        "default@\uff11",  # FULLWIDTH DIGIT ONE
        "Default",  # the name must match the pattern in full
        "default\n@1",
        "1default",
    ],
)
def test_anything_else_is_a_value_error_saying_what_was_expected(ref: str) -> None:
    with pytest.raises(ValueError) as info:
        refs.parse_ref(ref, LOWER, what="thing")
    assert str(info.value) == (f"not a thing reference (expected name or name@version): {ref!r}")


def test_the_name_pattern_is_the_callers() -> None:
    assert refs.parse_ref("Helpful.v2@1", r"[A-Za-z0-9][A-Za-z0-9._-]*", what="d") == (
        "Helpful.v2",
        1,
    )
    with pytest.raises(ValueError):
        refs.parse_ref("Helpful.v2@1", LOWER, what="d")


def test_constitution_refs_use_it() -> None:
    assert constitution.parse_ref("default@2") == ("default", 2)
    with pytest.raises(ValueError, match="not a constitution reference"):
        constitution.parse_ref("default@²")
