"""Where a run may report artifacts: inside its own folder of the artifact store.

A completed run's ``artifact_uri`` is loaded by later runs (``base_model:
run:<id>``) and its ``checkpoint`` by its own resumption, so both are confined to
``<artifacts_dir>/runs/<run id>/``. The check is lexical and fails closed: the
value must be a ``file://`` URI with no host, query or fragment (a checkpoint may
also be a plain absolute path, as the trainer sends it), percent-decoded once
(what still looks percent-encoded after that is refused, so a consumer that
decodes twice cannot see another path), with no ``..`` segment, NUL or control
character, and must lie in the run's folder once normalised. No file system is
touched: the gateway need not mount the store.

Standard library only: the gateway applies it to what a trainer reports, and the
trainer and the workers apply it again before they load a run's model (adding a check
that follows symlinks on their own disk).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import PurePath, PurePosixPath
from urllib.parse import unquote, urlsplit

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


class OutsideStore(ValueError):
    """The value does not name a place inside the run's artifact folder."""


def confine(value: str, run_dir: PurePath, *, plain_path: bool = False) -> PurePosixPath:
    """The normalised path ``value`` names, if it is ``run_dir`` (absolute, resolved)
    or lies inside it; ``OutsideStore`` saying why otherwise.

    ``value`` is a ``file://`` URI, or with ``plain_path`` also an absolute path.
    """
    if _CONTROL.search(value):
        raise OutsideStore("it holds a NUL or control character")
    if plain_path and value.startswith("/"):
        path = value
    else:
        parts = urlsplit(value)
        if parts.scheme != "file":
            raise OutsideStore("it must be a file:// URI" + " or an absolute path" * plain_path)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise OutsideStore("a file URI must have no host, query or fragment")
        try:
            path = unquote(parts.path, errors="strict")
        except UnicodeDecodeError as exc:
            raise OutsideStore("its percent-encoding is not UTF-8") from exc
        if _CONTROL.search(path):
            raise OutsideStore("it holds a NUL or control character")
    if _ESCAPE.search(path):
        raise OutsideStore("its path is percent-encoded twice")
    if not path.startswith("/") or path.startswith("//"):
        raise OutsideStore("the path must be absolute")
    if ".." in path.split("/"):
        raise OutsideStore("the path must not contain '..'")
    normal = PurePosixPath(posixpath.normpath(path))
    root = PurePosixPath(run_dir)
    if normal != root and root not in normal.parents:
        raise OutsideStore(f"the path is not inside {root}/")
    return normal
