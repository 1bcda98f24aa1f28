"""Pure helpers that shape what a page shows (no queries, no HTTP)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from charter.core.constitution import ConstitutionDiff

# Training curves in a useful order: the objective first, then what explains it.
_METRIC_RANK = ("loss", "reward", "kl", "accurac")


def metric_order(name: str) -> tuple[int, str]:
    lowered = name.lower()
    rank = next((i for i, word in enumerate(_METRIC_RANK) if word in lowered), len(_METRIC_RANK))
    return rank, name


@dataclass(frozen=True)
class Change:
    """One principle in a diff: ``kind`` is added, removed or changed; ``words`` the
    text as (``same``/``del``/``ins``, words) runs, for changed fields."""

    kind: str
    principle_set: str
    principle_id: str
    fields: list[tuple[str, list[tuple[str, str]]]]


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.split(), after.split()
    runs: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            runs.append(("same", " ".join(old[i1:i2])))
            continue
        if i2 > i1:
            runs.append(("del", " ".join(old[i1:i2])))
        if j2 > j1:
            runs.append(("ins", " ".join(new[j1:j2])))
    return runs


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def diff_lines(diff: ConstitutionDiff) -> list[Change]:
    changes: list[Change] = []
    for set_name in ("critique_principles", "comparison_principles"):
        principles = getattr(diff, set_name)
        label = set_name.replace("_", " ")
        for added in principles.added:
            fields = [(k, [("ins", _text(v))]) for k, v in added.items() if k != "id"]
            changes.append(Change("added", label, str(added["id"]), fields))
        for removed in principles.removed:
            fields = [(k, [("del", _text(v))]) for k, v in removed.items() if k != "id"]
            changes.append(Change("removed", label, str(removed["id"]), fields))
        for changed in principles.changed:
            fields = [
                (k, word_diff(_text(changed.before.get(k, "")), _text(changed.after.get(k, ""))))
                for k in sorted(set(changed.before) | set(changed.after))
                if changed.before.get(k) != changed.after.get(k)
            ]
            changes.append(Change("changed", label, changed.id, fields))
    return changes
