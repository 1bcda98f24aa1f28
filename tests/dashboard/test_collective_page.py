"""The public-input pages in a real headless Chromium: the opinion map, the consensus
ranking and the divisive list show the numbers of the analysis API, which
tests/gateway/test_public_inputs_api.py checks against the population it was built from."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from tests.dashboard.conftest import SCREENSHOTS, Project, Tab
from tests.gateway.test_public_inputs_api import AGREED, SPLIT, json_upload


def test_a_public_input_page_draws_the_groups_and_ranks_the_statements(
    gateway: Any,
    open_tab: Any,
    issue: Any,
    engine: Engine,
    settings: Any,
    default_document: Any,
    backend: str,
) -> None:
    key = issue("alpha", ("admin",))
    project = Project(gateway, key.key, engine, settings, default_document)
    assert project.http.post("/v1/public-inputs/town", json=json_upload()).status_code == 201
    params = {"min_votes": 4, "participants": "true"}
    analysis = project.http.get("/v1/public-inputs/town/analysis", params=params).json()

    tab: Tab = open_tab()
    tab.login(key.key)
    tab.goto("/dashboard/public-inputs")
    assert tab.page.query_selector('tr[data-ref="town@1"]') is not None
    tab.goto("/dashboard/public-inputs/town@1?min_votes=4")
    assert tab.page.inner_text("#k") == "2"
    drawn = sorted((float(x), y) for x, y in tab.points(
        "Opinion map: each participant on the votes' first two components"
    ))  # fmt: skip
    expected = sorted((p["x"], p["y"]) for p in analysis["participants"])
    assert len(drawn) == len(expected) == 40
    for (x, y), (ex, ey) in zip(drawn, expected, strict=True):
        assert x == pytest.approx(ex, abs=1e-9) and y == pytest.approx(ey, abs=1e-9)
    ranked = [
        row.get_attribute("data-statement")
        for row in tab.page.query_selector_all("#consensus tbody tr")
    ]
    assert ranked == [s["id"] for s in analysis["statements"]]
    candidates = {
        row.get_attribute("data-statement")
        for row in tab.page.query_selector_all("#consensus tbody tr.candidate")
    }
    assert candidates == AGREED
    divisive = [
        row.get_attribute("data-statement")
        for row in tab.page.query_selector_all("#divisive tbody tr")
    ]
    assert set(divisive) == SPLIT
    shown = [
        float(cell.get_attribute("data-value"))
        for cell in tab.page.query_selector_all("#divisive [data-stat=divisiveness]")
    ]
    assert shown == sorted(shown, reverse=True)
    if backend == "sqlite":
        tab.page.screenshot(path=str(SCREENSHOTS / "public-input.png"), full_page=True)
    tab.assert_clean()
