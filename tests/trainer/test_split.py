"""The trainer's held-out split: drawn by ``datasets``, rows kept as they came."""

from __future__ import annotations

import pytest

from services.trainer.daemon import split


def rows(n: int) -> list[dict]:
    # Provenance whose type differs from row to row: no Arrow schema could hold it.
    return [{"prompt": f"p{i}", "provenance": {"x": [i] if i % 2 else str(i)}} for i in range(n)]


def test_the_split_is_disjoint_complete_sized_and_deterministic() -> None:
    data = rows(50)
    train, held = split(data, 0.2)
    assert held is not None and len(held) == 10 and len(train) == 40
    assert sorted(r["prompt"] for r in train + held) == sorted(r["prompt"] for r in data)
    assert all(r in data for r in held)  # the same dicts, provenance untouched
    assert split(data, 0.2) == (train, held)
    assert split(data, 0.2, seed=1) != (train, held)


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.5), (3, 0.1), (10, 0.0), (2, 0.4)])
def test_too_few_rows_hold_none_out(n: int, fraction: float) -> None:
    data = rows(n)
    assert split(data, fraction) == (data, None)
