"""The ``name@version`` notation that names a constitution or a dataset version.

One parser for every place a ref is read, so that they all accept the same
versions: ASCII ``[1-9][0-9]{0,8}``. (``str.isdigit`` also takes "²", which
``int`` refuses, and ten digits can overflow a 32-bit version column.)
"""

from __future__ import annotations

import re

VERSION_PATTERN = r"[1-9][0-9]{0,8}"
_VERSION = re.compile(VERSION_PATTERN)


def parse_ref(
    ref: str, name_pattern: str | re.Pattern[str], *, what: str
) -> tuple[str, int | None]:
    """``(name, version)`` of ``name`` (version ``None``: the latest) or ``name@version``.

    Surrounding whitespace is ignored; the name must match ``name_pattern`` in full.
    Anything else raises :class:`ValueError` saying what was expected, for ``what``
    (e.g. ``"constitution"``).
    """
    name, at, version = ref.strip().partition("@")
    if re.fullmatch(name_pattern, name) is None or (at and _VERSION.fullmatch(version) is None):
        raise ValueError(f"not a {what} reference (expected name or name@version): {ref!r}")
    return name, int(version) if at else None
