"""Strict, bounded parsing of untrusted JSON and YAML documents.

Pure domain code: no I/O. Every document a client sends (request bodies, JSONL
lines, YAML constitutions, cursors) goes through :func:`load_json` or
:func:`load_yaml`, which either return a plain JSON value (``str``, ``int``,
``float``, ``bool``, ``None``, ``list``, ``dict`` with ``str`` keys) that every
later layer can store and render, or raise :class:`DocumentError` naming the
limit that was hit and where (``path``).

The rules, for both loaders (and :func:`check_value` for a value already in
Python):

- the bytes are valid UTF-8;
- numbers: integers fit a signed 64-bit integer (a literal longer than 20
  characters is refused before Python converts it, so its 4,300-digit limit is
  never reached), floats are finite (no NaN, Infinity, or ``1e400``, which
  overflows to infinity);
- no mapping repeats a key (JSON's last-one-wins would hide the first);
- no string or key holds a lone surrogate (``"\\ud800"``; an escaped pair such
  as ``"\\ud83d\\ude00"`` is one character and fine) or NUL (PostgreSQL text and
  JSONB cannot store it), or is longer than ``Bounds.max_string_chars``;
- containers nest at most ``Bounds.max_depth`` levels (the root container is
  level 1); a parser's ``RecursionError`` is reported as this limit.

YAML is read by a :class:`yaml.SafeLoader` subclass that also refuses anchors and
aliases as soon as the parser meets them, before anything is expanded (so an
"alias bomb" costs microseconds), explicit tags other than the standard str,
int, float, bool, null, seq and map, keys that are not strings, and streams of
more than one document. Timestamps, merge keys (``<<``) and ``=`` stay plain
strings. Otherwise values are those of ``yaml.safe_load``.

Cost: JSON is parsed by the stdlib's C scanner with small hooks (object pairs,
ints, floats, constants) that raise on a fault; the document is then walked
only when its text could break a rule the hooks cannot see (an escape that
could decode to a surrogate or NUL, more brackets than ``max_depth``, text
longer than ``max_string_chars``). A fault is located (its ``path``) by parsing
once more, slowly, only when there is one.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml  # type: ignore[import-untyped]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# "-9223372036854775808" is 20 characters: anything longer is out of range.
_INT_LITERAL_MAX = 20
# A YAML int may carry a base prefix and "_" separators (0b + 64 digits + 63 "_"s).
_YAML_INT_LITERAL_MAX = 160
# An escape that could decode to a surrogate (U+D800-U+DFFF) or NUL. Conservative:
# an escaped backslash followed by "ud800" also matches; that only costs a walk.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_KEY_SHOWN = 40  # characters of a key quoted in a path or a message


@dataclass(frozen=True)
class Bounds:
    """Limits on one document. Integers always fit int64; floats are always finite."""

    max_depth: int = 32
    """Deepest nesting of containers (arrays or objects, sequences or mappings); the
    root container is level 1, so ``[[1]]`` is 2 levels deep."""
    max_string_chars: int = 1_000_000
    """Longest string or mapping key, in characters (code points)."""

    def __post_init__(self) -> None:
        if self.max_depth < 1:
            raise ValueError("Bounds.max_depth must be at least 1")
        if self.max_string_chars < 1:
            raise ValueError("Bounds.max_string_chars must be at least 1")


class DocumentError(ValueError):
    """A document broke a rule. ``str(error)`` says which rule and limit; ``path`` is
    the dotted location of the fault (``"metadata.a.3.b"``, list indexes as numbers),
    ``""`` for the whole document."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


# --------------------------------------------------------------------------- paths


def _show(key: str) -> str:
    """A key as it may appear in a path or a message: printable, at most 40 characters."""
    if not key.isprintable():
        key = key.encode("unicode_escape").decode("ascii")
    return key if len(key) <= _KEY_SHOWN else key[:_KEY_SHOWN] + "..."


def _join(path: str, key: object) -> str:
    part = _show(key) if isinstance(key, str) else str(key)
    return f"{path}.{part}" if path else part


# A trail is the path of a container, built only when a fault needs it: the root's
# path (a str) or (parent trail, key).
_Trail = str | tuple[Any, object]


def _path(trail: _Trail, key: object = None) -> str:
    parts: list[object] = [] if key is None else [key]
    while isinstance(trail, tuple):
        trail, part = trail
        parts.append(part)
    path = trail
    for part in reversed(parts):
        path = _join(path, part)
    return path


# --------------------------------------------------------------------------- the tree rules


def _depth_error(bounds: Bounds) -> str:
    return f"nesting is deeper than {bounds.max_depth} levels (the limit)"


def _string_error(what: str, value: str, bounds: Bounds) -> str | None:
    if len(value) > bounds.max_string_chars:
        return (
            f"{what} is {len(value)} characters long; the limit is "
            f"{bounds.max_string_chars} characters"
        )
    bad = _BAD_CHAR.search(value)
    if bad is None:
        return None
    char = bad.group()
    if char == "\x00":
        return f"{what} holds a NUL character (U+0000), which cannot be stored"
    return (
        f"{what} holds a lone surrogate (U+{ord(char):04X}), which is not a character; "
        "escape a character outside the BMP as a surrogate pair or send it as UTF-8"
    )


def _number_error(value: int | float) -> str | None:
    if type(value) is int:
        if INT64_MIN <= value <= INT64_MAX:
            return None
        return "integer is outside the signed 64-bit range (-2**63 .. 2**63 - 1)"
    if math.isfinite(value):
        return None
    if math.isnan(value):
        return "NaN is not allowed; numbers must be finite"
    return "Infinity is not allowed; numbers must be finite (and fit a 64-bit float)"


class _Bad:
    """A placeholder the locating JSON parse leaves where a hook found a fault."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _DuplicateKeys(dict[str, Any]):
    """An object with a repeated key (locating parse only)."""

    duplicate: str = ""


def _walk(root: Any, bounds: Bounds, path: str, *, lengths: bool, chars: bool) -> None:
    """Raise :class:`DocumentError` at the first fault in ``root``'s tree.

    Iterative, so no depth of input can exhaust the stack. ``lengths`` and ``chars``
    turn the per-string checks on (a caller that knows from the text that none can
    fail skips them).
    """
    _check_scalar(root, bounds, path)
    if type(root) not in (dict, list, tuple):
        return
    max_depth = bounds.max_depth
    max_chars = bounds.max_string_chars if lengths else math.inf
    bad_char = _BAD_CHAR.search if chars else _nothing
    stack: list[tuple[Any, _Trail, int]] = [(root, path, 1)]
    while stack:
        node, trail, depth = stack.pop()
        is_dict = type(node) is dict
        items: Iterable[tuple[Any, Any]] = node.items() if is_dict else enumerate(node)
        for key, value in items:
            if is_dict:
                if type(key) is not str:
                    raise DocumentError(
                        f"mapping keys must be strings, not {type(key).__name__}", _path(trail)
                    )
                if len(key) > max_chars or bad_char(key):
                    raise DocumentError(
                        str(_string_error(f"key {_show(key)!r}", key, bounds)), _path(trail)
                    )
            kind = type(value)
            if kind is str:
                if len(value) > max_chars or bad_char(value):
                    raise DocumentError(
                        str(_string_error("string", value, bounds)), _path(trail, key)
                    )
            elif kind is dict or kind is list or kind is tuple:
                if depth >= max_depth:
                    raise DocumentError(_depth_error(bounds), _path(trail, key))
                stack.append((value, (trail, key), depth + 1))
            elif kind is not bool and value is not None:
                _check_scalar(value, bounds, _path(trail, key))


def _nothing(_: str) -> None:
    return None


def _check_scalar(value: Any, bounds: Bounds, path: str) -> None:
    """The rules for a value that is not a list or dict (containers pass)."""
    kind = type(value)
    message: str | None = None
    if kind is str:
        message = _string_error("string", value, bounds)
    elif kind is int or kind is float:
        message = _number_error(value)
    elif kind is _Bad:
        message = value.message
    elif kind is _DuplicateKeys:
        raise DocumentError(
            f"duplicate key {_show(value.duplicate)!r}: each key may appear once in a mapping",
            _join(path, value.duplicate),
        )
    elif kind not in (bool, type(None), dict, list, tuple):
        message = f"{kind.__name__} is not a JSON value"
    if message is not None:
        raise DocumentError(message, path)


def check_value(value: Any, bounds: Bounds = Bounds(), path: str = "") -> None:
    """Apply the document rules to a value already in Python; ``path`` prefixes every
    reported location. Lists and tuples are sequences. The walk visits a subtree
    shared by several parents once per parent."""
    _walk(value, bounds, path, lengths=True, chars=True)


# --------------------------------------------------------------------------- JSON


class _Refused(Exception):
    """A hook of the fast JSON parse found a fault; the locating parse says where."""


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Refused
    return result


def _strict_int(literal: str) -> int:
    if len(literal) > _INT_LITERAL_MAX:
        raise _Refused
    value = int(literal)
    if not INT64_MIN <= value <= INT64_MAX:
        raise _Refused
    return value


def _strict_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _Refused
    return value


def _refuse_constant(name: str) -> Any:
    raise _Refused


def _marked_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen: set[str] = set()
    marked = _DuplicateKeys(result)
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _marked_int(literal: str) -> Any:
    if len(literal) > _INT_LITERAL_MAX:
        return _Bad(
            f"integer literal of {len(literal)} characters is outside the signed 64-bit range "
            "(-2**63 .. 2**63 - 1)"
        )
    value = int(literal)
    return value if INT64_MIN <= value <= INT64_MAX else _Bad(str(_number_error(value)))


def _marked_float(literal: str) -> Any:
    value = float(literal)
    if math.isinf(value):
        return _Bad(f"number {literal[:_KEY_SHOWN]} overflows to infinity; numbers must be finite")
    return value


def _marked_constant(name: str) -> Any:
    return _Bad(f"{name} is not allowed; numbers must be finite")


_decoders = threading.local()  # the C scanner keeps per-parse state: one per thread


def _fast_decoder() -> json.JSONDecoder:
    decoder: json.JSONDecoder | None = getattr(_decoders, "fast", None)
    if decoder is None:
        decoder = _decoders.fast = json.JSONDecoder(
            object_pairs_hook=_strict_pairs,
            parse_int=_strict_int,
            parse_float=_strict_float,
            parse_constant=_refuse_constant,
        )
    return decoder


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"the document is not valid UTF-8 (byte {exc.start}: {exc.reason})"
        ) from exc


def load_json(data: bytes | str, bounds: Bounds = Bounds()) -> Any:
    """The JSON value in ``data``, or :class:`DocumentError`."""
    text = _text(data)
    try:
        value = _fast_decoder().decode(text)
    except _Refused:
        _locate_json(text, bounds)
        raise DocumentError("the document breaks a rule") from None  # _locate raised
    except RecursionError:
        raise DocumentError(_depth_error(bounds)) from None
    except json.JSONDecodeError as exc:
        raise DocumentError(f"not valid JSON: {exc}") from None
    # The hooks saw every number, constant and object; the text says which of the
    # other rules could fail at all (a string longer than the text is impossible,
    # and so is nesting deeper than the number of brackets).
    lengths = len(text) > bounds.max_string_chars
    chars = _SUSPECT_ESCAPE.search(text) is not None
    if isinstance(data, str) and not text.isascii() and _SURROGATE.search(text):
        chars = True  # a str may carry raw surrogates; decoded bytes cannot
    deep = text.count("[") + text.count("{") > bounds.max_depth
    if (lengths or chars or deep) and not _plain_ok(value, bounds, lengths=lengths, chars=chars):
        _walk(value, bounds, "", lengths=True, chars=True)  # says where, and raises
    return value


def _plain_ok(root: Any, bounds: Bounds, *, lengths: bool, chars: bool) -> bool:
    """Whether a freshly parsed JSON tree keeps the depth (and, if asked, the string)
    rules: one level at a time in comprehensions, several times faster than
    :func:`_walk`, but it cannot say where a fault is."""
    values: list[Any] = [root]
    depth = 0
    while values:
        strings = [v for v in values if type(v) is str] if lengths or chars else []
        containers = [v for v in values if type(v) is dict or type(v) is list]
        if containers:
            depth += 1
            if depth > bounds.max_depth:
                return False
            if lengths or chars:
                strings += [k for node in containers if type(node) is dict for k in node]
        if lengths and strings and max(map(len, strings)) > bounds.max_string_chars:
            return False
        if chars and strings:
            joined = "".join(strings)
            if "\x00" in joined:
                return False
            try:
                joined.encode("utf-8")  # a surrogate cannot be encoded
            except UnicodeEncodeError:
                return False
        values = [v for node in containers for v in (node.values() if type(node) is dict else node)]
    return True


def _locate_json(text: str, bounds: Bounds) -> None:
    """Parse again leaving placeholders where the hooks refused, and raise at the first
    fault the walk meets."""
    decoder = json.JSONDecoder(
        object_pairs_hook=_marked_pairs,
        parse_int=_marked_int,
        parse_float=_marked_float,
        parse_constant=_marked_constant,
    )
    try:
        value = decoder.decode(text)
    except RecursionError:
        raise DocumentError(_depth_error(bounds)) from None
    except json.JSONDecodeError as exc:  # after the fault the fast parse stopped at
        raise DocumentError(f"not valid JSON: {exc}") from None
    _walk(value, bounds, "", lengths=True, chars=True)


# --------------------------------------------------------------------------- YAML

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, SEQ, MAP = (
    _TAG + name for name in ("str", "int", "float", "bool", "null", "seq", "map")
)
_ALLOWED_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL, SEQ, MAP})
_IMPLICIT_TAGS = frozenset({INT, FLOAT, BOOL, NULL})  # not timestamp, merge or value


def _shown_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


class _Open:
    """A sequence or mapping being filled: its value, its path, the key awaiting a value."""

    __slots__ = ("key", "path", "value")

    def __init__(self, value: list[Any] | dict[str, Any], path: str) -> None:
        self.value = value
        self.path = path
        self.key: str | None = None


class _BoundedLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader's reader, scanner, parser and resolver, with its composer and
    constructor replaced by :meth:`document`: plain values are built straight from
    the parser's events (no node tree), so an anchor, alias, foreign tag, complex key
    or too-deep container is refused the moment the parser reports it, nothing is
    ever expanded, and memory stays proportional to the document."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag in _IMPLICIT_TAGS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, text: str, bounds: Bounds) -> None:
        super().__init__(text)
        self.bounds = bounds

    def document(self) -> Any:
        """The value of the stream's only document; ``None`` for an empty stream."""
        self.get_event()  # stream start
        if self.check_event(yaml.StreamEndEvent):
            return None
        self.get_event()  # document start
        value = self.root()
        self.get_event()  # document end
        if not self.check_event(yaml.StreamEndEvent):
            raise DocumentError(
                "a YAML stream must hold one document; this one holds more (a second '---')"
            )
        return value

    def root(self) -> Any:
        stack: list[_Open] = []  # the open containers, outermost first
        while True:
            event = self.get_event()
            if isinstance(event, yaml.CollectionEndEvent):
                done = stack.pop()
                if not stack:
                    return done.value
                self.add(stack[-1], done.value)
                continue
            parent = stack[-1] if stack else None
            is_key = parent is not None and isinstance(parent.value, dict) and parent.key is None
            path = self.path_of(parent)
            self.check_node(event, path)
            if isinstance(event, yaml.ScalarEvent):
                if parent is None:
                    return self.scalar(event, path)
                if is_key:
                    parent.key = self.key(event, parent)
                else:
                    self.add(parent, self.scalar(event, path))
                continue
            if is_key:
                raise DocumentError("mapping keys must be strings, not sequences or mappings", path)
            if len(stack) >= self.bounds.max_depth:
                raise DocumentError(_depth_error(self.bounds), path)
            sequence = isinstance(event, yaml.SequenceStartEvent)
            if event.tag not in (None, "!", SEQ if sequence else MAP):
                kind = "sequence" if sequence else "mapping"
                raise DocumentError(f"YAML tag {_shown_tag(event.tag)} cannot mark a {kind}", path)
            stack.append(_Open([] if sequence else {}, path))

    @staticmethod
    def path_of(parent: _Open | None) -> str:
        """The path of the node the next event starts (a key's is its mapping's)."""
        if parent is None:
            return ""
        if isinstance(parent.value, list):
            return _join(parent.path, len(parent.value))
        return parent.path if parent.key is None else _join(parent.path, parent.key)

    @staticmethod
    def add(parent: _Open, value: Any) -> None:
        if isinstance(parent.value, list):
            parent.value.append(value)
        else:
            assert parent.key is not None
            parent.value[parent.key] = value
            parent.key = None

    def check_node(self, event: Any, path: str) -> None:
        """Refuse aliases, anchors and foreign tags before anything is built."""
        if isinstance(event, yaml.AliasEvent):
            raise DocumentError(f"YAML aliases (*{_show(event.anchor)}) are not allowed", path)
        if event.anchor is not None:
            raise DocumentError(f"YAML anchors (&{_show(event.anchor)}) are not allowed", path)
        if event.tag not in (None, "!") and event.tag not in _ALLOWED_TAGS:
            raise DocumentError(
                f"YAML tag {_show(_shown_tag(event.tag))} is not allowed "
                "(only !!str, !!int, !!float, !!bool, !!null, !!seq and !!map)",
                path,
            )

    def tag_of(self, event: Any) -> str:
        if event.tag in (None, "!"):
            return str(self.resolve(yaml.ScalarNode, event.value, event.implicit))
        return str(event.tag)

    def key(self, event: Any, mapping: _Open) -> str:
        tag, key = self.tag_of(event), event.value
        if tag != STR:
            raise DocumentError(
                f"mapping keys must be strings; {_show(key)!r} is read as "
                f"{_shown_tag(tag).removeprefix('!!')} (quote it)",
                mapping.path,
            )
        message = _string_error(f"key {_show(key)!r}", key, self.bounds)
        if message is not None:
            raise DocumentError(message, mapping.path)
        if key in mapping.value:
            raise DocumentError(
                f"duplicate key {_show(key)!r}: each key may appear once in a mapping",
                _join(mapping.path, key),
            )
        return str(key)

    def scalar(self, event: Any, path: str) -> Any:
        tag, literal = self.tag_of(event), event.value
        if tag == STR:
            message = _string_error("string", literal, self.bounds)
            if message is not None:
                raise DocumentError(message, path)
            return literal
        if tag == NULL:
            return None
        if tag == INT and len(literal) > _YAML_INT_LITERAL_MAX:
            raise DocumentError(
                f"integer literal of {len(literal)} characters is outside the signed 64-bit "
                "range (-2**63 .. 2**63 - 1)",
                path,
            )
        construct = {
            INT: self.construct_yaml_int,
            FLOAT: self.construct_yaml_float,
            BOOL: self.construct_yaml_bool,
        }.get(tag)
        if construct is None:
            raise DocumentError(f"YAML tag {_shown_tag(tag)} cannot mark a scalar", path)
        try:
            value = construct(yaml.ScalarNode(tag, literal))
        except (ValueError, KeyError, IndexError, TypeError):
            raise DocumentError(
                f"{_show(literal)!r} is not a valid {_shown_tag(tag)} value", path
            ) from None
        message = None if type(value) is bool else _number_error(value)
        if message is not None:
            raise DocumentError(message, path)
        return value


def load_yaml(data: bytes | str, bounds: Bounds = Bounds()) -> Any:
    """The JSON-compatible value of the single YAML document in ``data`` (``None`` for
    an empty stream), or :class:`DocumentError`."""
    text = _text(data)
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, bounds)  # the reader refuses non-printable characters
        return loader.document()
    except yaml.reader.ReaderError as exc:
        message = _string_error("the document", chr(exc.character), bounds)
        raise DocumentError(message or f"not valid YAML: {_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise DocumentError(f"not valid YAML: {_yaml_problem(exc)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_problem(exc: Any) -> str:
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML refuses to read
        return f"character U+{exc.character:04X} (position {exc.position}) is not allowed in YAML"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if problem is None or mark is None:
        return str(exc).replace("\n", " ")
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
