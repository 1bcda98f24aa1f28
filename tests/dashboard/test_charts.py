"""The SVG charts: every point and bar carries its data, labels are escaped."""

from __future__ import annotations

from xml.etree import ElementTree

from charter.core.constitution import Constitution, diff
from services.gateway.dashboard import charts
from services.gateway.dashboard.views import diff_lines, metric_order, word_diff


def _svg(markup: str) -> ElementTree.Element:
    return ElementTree.fromstring(markup)  # well-formed XML, or this raises


def test_line_chart_points_carry_their_values() -> None:
    svg = _svg(
        charts.line_chart(
            [charts.Series("loss", [(10, 0.5), (0, 2.0), (5, 1.25)])],
            title="loss <&>",
            x_label="step",
            y_label="loss",
        )
    )
    points = [(c.get("data-x"), c.get("data-y")) for c in svg.iter("circle")]
    assert points == [("0", "2"), ("5", "1.25"), ("10", "0.5")]  # sorted by x
    assert svg.get("data-chart") == "loss <&>"
    ys = [float(c.get("cy")) for c in svg.iter("circle")]
    assert ys[0] < ys[1] < ys[2]  # larger values are drawn higher


def test_bar_chart_and_histogram() -> None:
    svg = _svg(
        charts.bar_chart([("a", 3), ("b", 0), ("c", 1.5)], title="t", x_label="x", y_label="y")
    )
    assert [(r.get("data-label"), r.get("data-value")) for r in svg.iter("rect")] == [
        ("a", "3"),
        ("b", "0"),
        ("c", "1.5"),
    ]
    svg = _svg(charts.histogram([0.0, 0.05, 0.5, 0.99, 1.0], bins=4, title="h", x_label="p"))
    assert [r.get("data-value") for r in svg.iter("rect")] == ["2", "0", "1", "2"]


def test_a_scatter_draws_each_point_with_its_intervals() -> None:
    points = [
        charts.Estimate2D("base", 0, 0, 0, 0, 0, 0),
        charts.Estimate2D("rl <&>", 120.5, 80, 150, -40, -90, 10),
    ]
    svg = _svg(charts.scatter(points, title="elo", x_label="helpful", y_label="harmless"))
    groups = [g for g in svg.iter("g") if g.get("data-series")]
    assert [g.get("data-series") for g in groups] == ["base", "rl <&>"]
    circle = groups[1].find("circle")
    assert circle is not None
    assert (circle.get("data-x"), circle.get("data-y")) == ("120.5", "-40")
    horizontal, vertical = groups[1].findall("line")
    assert float(horizontal.get("x1")) < float(circle.get("cx")) < float(horizontal.get("x2"))
    assert float(vertical.get("y2")) < float(circle.get("cy")) < float(vertical.get("y1"))
    empty = _svg(charts.scatter([], title="t", x_label="x", y_label="y", empty="none yet"))
    assert not list(empty.iter("circle")) and "none yet" in ElementTree.tostring(empty, "unicode")


def test_empty_charts_say_so_and_have_no_points() -> None:
    svg = _svg(charts.line_chart([charts.Series("s", [])], title="t", x_label="x", y_label="y"))
    assert not list(svg.iter("circle")) and "no data yet" in ElementTree.tostring(svg, "unicode")
    svg = _svg(charts.bar_chart([], title="t", x_label="x", y_label="y", empty="nothing"))
    assert not list(svg.iter("rect")) and "nothing" in ElementTree.tostring(svg, "unicode")


def test_times_and_ticks() -> None:
    assert charts.iso(0) == "1970-01-01T00:00:00Z" and charts.clock(3600) == "01:00"
    assert charts._ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert charts.number(3.0) == "3" and charts.number(0.1) == "0.1"


def test_a_readable_constitution_diff() -> None:
    before = Constitution(
        name="c",
        comparison_principles=[
            {"id": "kind", "text": "Which response is more kind?"},
            {"id": "gone", "text": "Old principle."},
        ],
    )
    after = Constitution(
        name="c",
        comparison_principles=[
            {"id": "kind", "text": "Which response is kinder and more honest?"},
            {"id": "new", "text": "New principle."},
        ],
    )
    changes = {(c.kind, c.principle_id): c for c in diff_lines(diff(before, after))}
    assert set(changes) == {("added", "new"), ("removed", "gone"), ("changed", "kind")}
    [(field, runs)] = changes[("changed", "kind")].fields
    assert field == "text"
    assert runs == [
        ("same", "Which response is"),
        ("ins", "kinder and"),
        ("same", "more"),
        ("del", "kind?"),
        ("ins", "honest?"),
    ]
    assert word_diff("a b c", "a b c") == [("same", "a b c")]
    assert sorted(["kl", "train/loss", "rewards/accuracies", "zeta"], key=metric_order) == [
        "train/loss",
        "rewards/accuracies",
        "kl",
        "zeta",
    ]


def test_time_ticks_fall_on_round_clock_times() -> None:
    ticks = charts._time_ticks(1_000_000_123, 1_000_000_123 + 6 * 3600)
    assert all(t % 3600 == 0 for t in ticks) and len(ticks) == 6
    assert all(t % 60 == 0 for t in charts._time_ticks(0, 700))
