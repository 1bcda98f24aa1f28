"""Strict, bounded parsing of untrusted JSON and YAML (charter.core.documents)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from charter.core import documents
from charter.core.documents import Bounds, DocumentError, check_value, load_json, load_yaml
from tests.conftest import ALIAS_BOMB

CONSTITUTIONS = Path(__file__).resolve().parents[2] / "constitutions"
LOADERS = {"json": load_json, "yaml": load_yaml}


def _refused(load: Any, data: bytes | str, bounds: Bounds = Bounds()) -> DocumentError:
    with pytest.raises(DocumentError) as info:
        load(data, bounds)
    error = info.value
    assert str(error) == error.message and error.message
    return error


# --------------------------------------------------------------------------- accepted


NORMAL_JSON = [
    (b"{}", {}),
    (b"[]", []),
    (b'"text"', "text"),
    (b"0", 0),
    (b"-1.5e-3", -1.5e-3),
    (b"1e308", 1e308),
    (b"true", True),
    (b"null", None),
    (
        b'{"name": "x", "list": [1, 2.5, false, null, {"k": "v"}], "nested": {"a": {"b": []}}}',
        {"name": "x", "list": [1, 2.5, False, None, {"k": "v"}], "nested": {"a": {"b": []}}},
    ),
    (b"9223372036854775807", 2**63 - 1),
    (b"-9223372036854775808", -(2**63)),
    ('{"é": "ünïcødé 漢字 🙂"}'.encode(), {"é": "ünïcødé 漢字 🙂"}),
    (b'"\\ud83d\\ude00"', "\U0001f600"),  # an escaped surrogate pair is one character
    (b'{"\\ud83d\\ude00": "\\u00e9\\t\\n\\"\\\\"}', {"\U0001f600": 'é\t\n"\\'}),
    (b'"\\\\ud800"', "\\ud800"),  # an escaped backslash, then plain text
    (b'"\\u0001"', "\x01"),
    (b" \n\t[1]\r\n ", [1]),
]


@pytest.mark.parametrize(("data", "expected"), NORMAL_JSON)
def test_normal_json_loads_like_json_loads(data: bytes, expected: Any) -> None:
    assert load_json(data) == expected == json.loads(data)
    assert load_json(data.decode()) == expected  # str input too


def test_json_values_keep_their_types() -> None:
    value = load_json(b'{"i": 1, "f": 1.0, "b": true, "n": null}')
    assert [type(v) for v in value.values()] == [int, float, bool, type(None)]


NORMAL_YAML = [
    (
        b"a: 1\nb: [x, 'y', \"z\"]\nc: {d: null, e: ~}\n",
        {"a": 1, "b": ["x", "y", "z"], "c": {"d": None, "e": None}},
    ),
    (b"- 1.5\n- -2\n- 0x10\n- 017\n- 1_000\n- true\n- no\n", [1.5, -2, 16, 15, 1000, True, False]),
    ("é: ünïcødé 漢字 🙂\n".encode(), {"é": "ünïcødé 漢字 🙂"}),
    (b'a: "\\U0001F600 \\u00e9"\n', {"a": "\U0001f600 é"}),
    (b"text: |\n  line one\n  line two\n", {"text": "line one\nline two\n"}),
    (
        b"a: !!str 12\nb: !!int '7'\nc: !!float 1\nd: !!bool 'true'\ne: !!null ''\n",
        {"a": "12", "b": 7, "c": 1.0, "d": True, "e": None},
    ),
    (b"\xef\xbb\xbfa: 1\n", {"a": 1}),  # a UTF-8 byte order mark
    (b"--- \na: 1\n...\n", {"a": 1}),  # one explicit document
    (b"a: 9223372036854775807\nb: -9223372036854775808\n", {"a": 2**63 - 1, "b": -(2**63)}),
]


@pytest.mark.parametrize(("data", "expected"), NORMAL_YAML)
def test_normal_yaml_loads_like_safe_load(data: bytes, expected: Any) -> None:
    value = load_yaml(data)
    assert value == expected == yaml.safe_load(data)
    assert [type(v) for v in _leaves(value)] == [type(v) for v in _leaves(expected)]


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def test_yaml_timestamps_merge_and_value_keys_stay_plain_strings() -> None:
    data = b"day: 2024-01-01\nwhen: 2024-01-01T10:00:00Z\n"
    assert load_yaml(data) == {"day": "2024-01-01", "when": "2024-01-01T10:00:00Z"}
    assert not isinstance(yaml.safe_load(data)["day"], str)  # safe_load makes a date
    assert load_yaml(b"<<: {a: 1}\n=: x\n") == {"<<": {"a": 1}, "=": "x"}


def test_empty_yaml_is_none() -> None:
    assert load_yaml(b"") is None
    assert load_yaml(b"# only a comment\n") is None


@pytest.mark.parametrize("path", sorted(CONSTITUTIONS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_constitutions_load_identically_to_safe_load(path: Path) -> None:
    data = path.read_bytes()
    assert load_yaml(data) == yaml.safe_load(data)
    # ... and as JSON, through the JSON loader.
    assert load_json(json.dumps(yaml.safe_load(data))) == yaml.safe_load(data)


def test_limits_are_inclusive() -> None:
    bounds = Bounds(max_depth=3, max_string_chars=5)
    assert load_json(b'[[["abcde"]]]', bounds) == [[["abcde"]]]
    assert load_json(b'{"abcde": {"k": ["v"]}}', bounds) == {"abcde": {"k": ["v"]}}
    assert load_yaml(b"abcde: [[abcde]]", bounds) == {"abcde": [["abcde"]]}
    assert load_json(b"[[[1]]]") == [[[1]]]  # the default allows 32 levels
    assert load_json(b"[" * 32 + b"]" * 32) is not None
    assert load_yaml(b"[" * 32 + b"]" * 32) is not None


def test_many_brackets_but_shallow_nesting_is_accepted() -> None:
    """More brackets than max_depth makes the loader walk the tree: it must still pass."""
    document = [{"a": [i, {"b": "[[[{{{"}]} for i in range(200)]
    assert load_json(json.dumps(document), Bounds(max_depth=4)) == document


def test_a_large_document_with_short_strings_is_accepted() -> None:
    """Text longer than max_string_chars makes the loader check every string."""
    document = {"rows": [{"prompt": "p" * 50, "i": i} for i in range(100)]}
    assert load_json(json.dumps(document), Bounds(max_string_chars=50)) == document


# --------------------------------------------------------------------------- refused by both


BAD = {
    # rule: (JSON, YAML, expected path, words in the message)
    "lone high surrogate": (
        '{"m": {"a": ["\\ud800"]}}',
        'm: {a: ["\\ud800"]}',
        "m.a.0",
        "surrogate",
    ),
    "lone low surrogate": ('{"m": "x\\udfffy"}', 'm: "x\\udfff"', "m", "surrogate"),
    "reversed pair": ('["\\ude00\\ud83d"]', '["\\ude00\\ud83d"]', "0", "surrogate"),
    "NUL": ('{"a": {"b": "x\\u0000"}}', 'a: {b: "x\\0"}', "a.b", "NUL"),
    "surrogate key": ('{"m": {"\\ud800": 1}}', 'm: {"\\ud800": 1}', "m", "surrogate"),
    "NUL key": ('{"m": {"a\\u0000": 1}}', 'm: {"a\\0": 1}', "m", "NUL"),
    "duplicate key": (
        '{"m": {"a": 1, "b": 2, "a": 3}}',
        "m:\n  a: 1\n  b: 2\n  a: 3\n",
        "m.a",
        "duplicate",
    ),
    "duplicate deep": ('{"a": [{"b": 1, "b": 1}]}', "a: [{b: 1, b: 1}]", "a.0.b", "duplicate"),
    "int over int64": ('{"n": 9223372036854775808}', "n: 9223372036854775808", "n", "64-bit"),
    "int under int64": ('{"n": -9223372036854775809}', "n: -9223372036854775809", "n", "64-bit"),
    "5000 digits": ('{"n": [' + "9" * 5000 + "]}", "n: [" + "9" * 5000 + "]", "n.0", "64-bit"),
    "overflow": ('{"x": [1e400]}', "x: [1.0e+400]", "x.0", "finite"),
    "NaN": ('{"x": NaN}', "x: .nan", "x", "NaN"),
    "Infinity": ('{"x": Infinity}', "x: .inf", "x", "Infinity"),
    "-Infinity": ('{"x": -Infinity}', "x: -.inf", "x", "Infinity"),
    "depth": ('{"a": ' + "[" * 40 + "]" * 40 + "}", "a: " + "[" * 40 + "]" * 40, "a", "32 levels"),
}


@pytest.mark.parametrize("rule", sorted(BAD))
@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_rule_is_enforced_with_its_path(kind: str, rule: str) -> None:
    json_text, yaml_text, path, words = BAD[rule]
    text = json_text if kind == "json" else yaml_text
    error = _refused(LOADERS[kind], text.encode())
    if rule == "depth":
        path += ".0" * 31  # the root mapping is level 1, so the 32nd list is level 33
    assert error.path == path, (error.path, str(error))
    assert words in str(error), str(error)


def test_messages_say_the_limit() -> None:
    bounds = Bounds(max_depth=5, max_string_chars=10)
    for load in (load_json, load_yaml):
        assert "5 levels" in str(_refused(load, b"[[[[[[1]]]]]]", bounds))
        error = _refused(load, b'{"a": "01234567890"}', bounds)
        assert (error.path, str(error)) == (
            "a",
            "string is 11 characters long; the limit is 10 characters",
        )
        error = _refused(load, b'{"a": {"01234567890": 1}}', bounds)
        assert error.path == "a" and "limit is 10 characters" in str(error)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_not_utf8_is_refused(kind: str) -> None:
    for data in (b'{"a": "\xff"}', b'{"a": "\xed\xa0\x80"}', '{"a": 1}'.encode("utf-16")):
        error = _refused(LOADERS[kind], data)
        assert error.path == "" and "UTF-8" in str(error)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_raw_surrogates_and_nul_in_str_input_are_refused(kind: str) -> None:
    assert "surrogate" in str(_refused(LOADERS[kind], '{"a": "x\ud800"}'))
    _refused(LOADERS[kind], '{"a": "x\x00"}')


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_100k_deep_nesting_is_refused_without_recursion_error(kind: str) -> None:
    for data in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        start = time.perf_counter()
        error = _refused(LOADERS[kind], data)
        assert "32 levels" in str(error)
        assert time.perf_counter() - start < 5
    # Block-style YAML nesting, and deeper than the interpreter's recursion limit.
    error = _refused(load_yaml, b"- " * 100_000 + b"x")
    assert "32 levels" in str(error)
    limit = sys.getrecursionlimit()
    deeper_than_the_stack = b"[" * (limit * 2) + b"]" * (limit * 2)
    bounds = Bounds(max_depth=limit * 4)
    if kind == "json":  # the C scanner recurses: its RecursionError is reported as the limit
        error = _refused(load_json, deeper_than_the_stack, bounds)
        assert f"{limit * 4} levels" in str(error) and error.path == ""
    else:  # the YAML builder does not recurse at all
        value = load_yaml(deeper_than_the_stack, bounds)
        for _ in range(limit * 2 - 1):
            (value,) = value
        assert value == []


SYNTAX_ERRORS = {
    "json": [b"{", b'{"a": 1,}', b"[1, 2", b"{'a': 1}", b'{"a": 1} trailing', b"", b"  "],
    "yaml": [b"{", b"[1, 2", b'{"a": 1} trailing', b"a: b: c", b"a:\n  - b\n c: d"],
}


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_syntax_errors_are_document_errors(kind: str) -> None:
    for data in SYNTAX_ERRORS[kind]:
        error = _refused(LOADERS[kind], data)
        assert f"not valid {kind.upper()}" in str(error) and error.path == "", str(error)


def test_a_fault_after_a_syntax_error_cannot_hide_it() -> None:
    """The fast JSON parse stops at the NaN; the locating one then meets bad syntax."""
    error = _refused(load_json, b'{"a": NaN, ')
    assert "not valid JSON" in str(error)


# --------------------------------------------------------------------------- JSON only


def test_json_constants_and_big_literals_are_refused_before_conversion() -> None:
    # 10**6 digits would take Python seconds to convert (and exceed its 4,300-digit cap).
    start = time.perf_counter()
    error = _refused(load_json, b"[" + b"1" * 1_000_000 + b"]")
    assert time.perf_counter() - start < 1
    assert error.path == "0" and "1000000 characters" in str(error)
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        error = _refused(load_json, constant)
        assert error.path == "" and constant.decode() in str(error)


def test_json_duplicate_key_names_the_first_repeated_key() -> None:
    error = _refused(load_json, b'{"list": [0, {"x": 1, "y": 2, "y": 3, "x": 4}]}')
    assert (error.path, str(error)) == (
        "list.1.y",
        "duplicate key 'y': each key may appear once in a mapping",
    )


def test_json_byte_order_mark_is_refused() -> None:
    assert "JSON" in str(_refused(load_json, b"\xef\xbb\xbf{}"))


# --------------------------------------------------------------------------- YAML only


def test_alias_bomb_is_refused_in_milliseconds() -> None:
    assert len(ALIAS_BOMB) < 600
    start = time.perf_counter()
    error = _refused(load_yaml, ALIAS_BOMB)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, elapsed  # yaml.safe_load: about a minute and gigabytes
    assert error.path == "metadata.a"
    assert str(error) == "YAML anchors (&a) are not allowed"


def test_a_single_anchor_or_alias_is_refused() -> None:
    error = _refused(load_yaml, b"a: &x 1\nb: 2\n")
    assert (error.path, str(error)) == ("a", "YAML anchors (&x) are not allowed")
    error = _refused(load_yaml, b"a: [1, *x]\n")
    assert (error.path, str(error)) == ("a.1", "YAML aliases (*x) are not allowed")
    error = _refused(load_yaml, b"base: &b {k: v}\nother:\n  <<: *b\n")
    assert error.path == "base" and "anchors" in str(error)


@pytest.mark.parametrize(
    "tag",
    [
        "!!binary aGVsbG8=",
        "!!set {a, b}",
        "!!omap [a: 1]",
        "!!timestamp 2024-01-01",
        "!!python/object:os.system x",
        "!!python/name:os.system ''",
        "!foo x",
        "!<tag:x.org,1:y> z",
    ],
)
def test_yaml_tags_outside_the_json_ones_are_refused(tag: str) -> None:
    error = _refused(load_yaml, f"metadata:\n  x: {tag}\n".encode())
    assert error.path == "metadata.x"
    assert "is not allowed" in str(error) and "!!str" in str(error)


def test_yaml_tags_must_fit_their_node() -> None:
    for data, path in (
        (b"a: !!str [1]", "a"),
        (b"a: !!map [1]", "a"),
        (b"a: !!seq {b: 1}", "a"),
        (b"a: [!!seq x]", "a.0"),
        (b"a: !!int abc", "a"),
        (b"a: !!float x", "a"),
        (b"a: !!bool maybe", "a"),
        (b"a: !!int ''", "a"),
    ):
        assert _refused(load_yaml, data).path == path, data


@pytest.mark.parametrize(
    ("data", "read_as"),
    [
        (b"1: x", "int"),
        (b"on: x", "bool"),
        (b"null: x", "null"),
        (b"1.5: x", "float"),
        (b"~: x", "null"),
    ],
)
def test_yaml_keys_must_be_strings(data: bytes, read_as: str) -> None:
    error = _refused(load_yaml, b"m:\n  " + data)
    assert error.path == "m"
    assert "keys must be strings" in str(error) and read_as in str(error)
    assert load_yaml(b"m:\n  '" + data.replace(b":", b"':", 1)) is not None  # quoted is fine


def test_yaml_complex_keys_are_refused() -> None:
    for data in (b"? [a, b]\n: x\n", b"? {a: 1}\n: x\n", b"{[a]: 1}"):
        assert "keys must be strings" in str(_refused(load_yaml, data))


def test_yaml_multi_document_streams_are_refused() -> None:
    for data in (b"a: 1\n---\nb: 2\n", b"--- 1\n--- 2\n", b"a: 1\n...\n---\nb: 2\n"):
        error = _refused(load_yaml, data)
        assert error.path == "" and "one document" in str(error)


def test_yaml_escaped_surrogate_pair_is_two_lone_surrogates() -> None:
    """YAML escapes name code points (JSON's pair rule does not apply): use \\U0001F600."""
    assert "surrogate" in str(_refused(load_yaml, b'a: "\\ud83d\\ude00"'))


def test_yaml_long_scalar_is_refused_by_its_length() -> None:
    error = _refused(load_yaml, b"a:\n  b: " + b"x" * 2000, Bounds(max_string_chars=1000))
    assert (error.path, str(error)) == (
        "a.b",
        "string is 2000 characters long; the limit is 1000 characters",
    )


def test_yaml_non_printable_characters_are_refused() -> None:
    assert "NUL" in str(_refused(load_yaml, "a: x\x00"))
    assert "surrogate" in str(_refused(load_yaml, "a: x\udfff"))
    error = _refused(load_yaml, b"a: \x07")
    assert str(error) == "not valid YAML: character U+0007 (position 3) is not allowed in YAML"


# --------------------------------------------------------------------------- check_value


def test_check_value_applies_the_same_rules_to_python_values() -> None:
    check_value({"a": [1, 2.5, "x", None, True, {"b": ()}]})
    cases: list[tuple[Any, str, str]] = [
        ({"a": {1: "x"}}, "body.a", "keys must be strings"),
        ({"a": [math.nan]}, "body.a.0", "NaN"),
        ({"a": math.inf}, "body.a", "Infinity"),
        ({"a": 2**63}, "body.a", "64-bit"),
        ({"a": -(2**63) - 1}, "body.a", "64-bit"),
        ({"a": b"bytes"}, "body.a", "bytes is not a JSON value"),
        ({"a": {1, 2}}, "body.a", "set is not a JSON value"),
        ({"a": "x\x00"}, "body.a", "NUL"),
        ({"a": ["\ud800"]}, "body.a.0", "surrogate"),
        ({"a\ud800": 1}, "body", "surrogate"),
        ("x" * 11, "body", "limit is 10 characters"),
    ]
    for value, path, words in cases:
        with pytest.raises(DocumentError) as info:
            check_value(value, Bounds(max_string_chars=10), path="body")
        assert info.value.path == path, (value, info.value.path)
        assert words in str(info.value), (value, str(info.value))


def test_check_value_stops_at_cycles() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(DocumentError, match="32 levels"):
        check_value(cycle)


def test_paths_show_odd_keys_safely() -> None:
    error = _refused(load_json, b'{"a.b": {"\\u0007" : {"x": NaN}}}')
    assert error.path == "a.b.\\x07.x"
    error = _refused(load_json, json.dumps({"k" * 100: [float("nan")]}).encode())
    assert error.path == "k" * 40 + "....0"


# --------------------------------------------------------------------------- fast path vs walk


def _random_tree(rng: random.Random, depth: int) -> Any:
    choice = rng.random()
    if depth == 0 or choice < 0.3:
        return rng.choice(
            [
                "plain",
                "é🙂",
                "\\ud800",
                "\ud800",
                "\x00",
                "x" * rng.randint(0, 30),
                rng.randint(-5, 5),
                2**63,
                1.5,
                math.inf,
                True,
                None,
            ]
        )
    if choice < 0.65:
        return [_random_tree(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {
        rng.choice(["a", "b", "c", "\ud800", "k" * 25]): _random_tree(rng, depth - 1)
        for _ in range(rng.randint(0, 4))
    }


def _expected_fault(value: Any, bounds: Bounds) -> str | None:
    try:
        check_value(value, bounds)
    except DocumentError as exc:
        return exc.path
    return None


def test_load_json_agrees_with_check_value_on_random_trees() -> None:
    """The fast path (hooks, text checks, level walk) must accept and refuse exactly
    what the plain walk does; the faults it finds are then located the same way."""
    rng = random.Random(20261201)
    bounds = Bounds(max_depth=4, max_string_chars=20)
    refused = 0
    for _ in range(3000):
        value = _random_tree(rng, rng.randint(0, 6))
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
        fault = _expected_fault(value, bounds)
        try:
            loaded = load_json(text.encode("utf-8", "surrogatepass"), bounds)
        except DocumentError as exc:
            refused += 1
            assert fault is not None, (text, str(exc))
            if "UTF-8" not in str(exc):  # else a raw surrogate, refused undecoded
                assert exc.path == fault, (text, str(exc))
        else:
            assert fault is None, (text, fault)
            assert loaded == value
    assert 500 < refused < 2800  # both outcomes were exercised


def test_hooks_refuse_what_the_placeholders_locate() -> None:
    """Every fault the fast parse's hooks raise on, the locating parse marks."""
    for data in (b'{"a": 1, "a": 2}', b"[1e999]", b"[NaN]", b"[99999999999999999999]"):
        with pytest.raises(documents._Refused):
            documents._fast_decoder().decode(data.decode())
        assert _refused(load_json, data).message


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError):
        Bounds(max_depth=0)
    with pytest.raises(ValueError):
        Bounds(max_string_chars=0)


def test_module_is_pure() -> None:
    forbidden = ("fastapi", "starlette", "sqlalchemy", "celery", "httpx", "pydantic")
    code = (
        "import sys, charter.core.documents\n"
        f"print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
