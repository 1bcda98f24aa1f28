"""API keys: generated once, shown once, stored as a peppered hash.

A key reads ``chk_<prefix>_<secret>``: the prefix is stored in clear to find the
row (and to show in listings), the whole key only as HMAC-SHA256 with the server
secret. Keys are 256-bit random, so a fast hash is enough (no bcrypt needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SCOPES = ("admin", "submit", "read", "train", "review", "classify")
# What each scope also grants: submitting, training or reviewing needs to read what it
# works on.
IMPLIED = {
    "admin": set(SCOPES),
    "submit": {"submit", "read"},
    "train": {"train", "read"},
    "review": {"review", "read"},
    # A deployment's filter key: it scores texts with the project's classifiers and can
    # read nothing else.
    "classify": {"classify"},
}
KEY_PREFIX = "chk_"


def generate() -> tuple[str, str]:
    """A new key and its public prefix."""
    prefix = secrets.token_hex(6)
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def prefix_of(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    return prefix if sep and len(prefix) == 12 and secret else None


def hash_key(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def matches(key: str, stored_hash: str, pepper: str) -> bool:
    return hmac.compare_digest(hash_key(key, pepper), stored_hash)


def granted(scopes: list[str]) -> set[str]:
    return set().union(*(IMPLIED.get(s, {s}) for s in scopes)) if scopes else set()
