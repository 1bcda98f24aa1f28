"""NucleusFilter keeps exactly the tokens transformers' temperature + top-p warpers keep."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers.generation.logits_process import (  # noqa: E402
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from workers.engines.sampling import NucleusFilter  # noqa: E402


def _reference(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    scores = TemperatureLogitsWarper(temperature)(None, scores.clone())
    return TopPLogitsWarper(top_p)(None, scores) if top_p < 1 else scores


@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 0.95), (1.0, 0.9), (0.3, 0.5)])
def test_filtered_scores_equal_the_sorting_warpers(temperature: float, top_p: float) -> None:
    generator = torch.Generator().manual_seed(0)
    ids = torch.zeros((6, 1), dtype=torch.long)
    shortcut = fallback = 0
    for scale in (0.5, 2.0, 4.0, 8.0, 16.0):  # flat (full-sort fallback) to peaked (top-k)
        scores = torch.randn((6, 4096), generator=generator) * scale
        nucleus = NucleusFilter(temperature, top_p, top_k=64)
        assert torch.equal(nucleus(ids, scores), _reference(scores, temperature, top_p))
        fallback += nucleus.fallback_rows
        shortcut += nucleus.rows - nucleus.fallback_rows
    assert shortcut > 0 and fallback > 0  # both paths were exercised


def test_top_p_one_only_scales_and_ties_keep_the_top_token() -> None:
    scores = torch.tensor([[1.0, 3.0, 2.0, 3.0]])
    ids = torch.zeros((1, 1), dtype=torch.long)
    assert torch.equal(NucleusFilter(0.5, 1.0)(ids, scores), scores / 0.5)
    kept = NucleusFilter(1.0, 1e-6, top_k=2)(ids, scores)
    assert int(torch.isfinite(kept).sum()) == 1 and float(kept.max()) == 3.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        NucleusFilter(0.0, 0.9)
    with pytest.raises(ValueError):
        NucleusFilter(0.7, 0.0)
