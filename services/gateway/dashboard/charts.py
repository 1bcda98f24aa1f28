"""Charts drawn on the server as inline SVG: pure functions from numbers to markup.

No script draws them, so a page is complete as served and its Content-Security-Policy
needs no ``unsafe-inline`` or third-party code. Every point and bar carries its data
in ``data-x``/``data-y`` (bars ``data-label``/``data-value``) attributes: the browser
tests compare those with the database. Styling is by class (``static/dashboard.css``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 40  # room for the title, ticks and axis labels
SERIES_CLASSES = 6  # .series-0 .. .series-5 in the stylesheet
DENSE = 80  # a series with more points than this gets small markers


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]


def number(value: float) -> str:
    """A value as its data attribute holds it: integers plainly, floats exactly."""
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def short(value: float) -> str:
    """A value as a tick label shows it."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M")


def clock_seconds(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


def _time_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Ticks on round clock times (whole minutes, quarter hours, hours ...)."""
    raw = (hi - lo) / count
    step = next((s for s in _TIME_STEPS if s >= raw), 86400)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _range(values: Sequence[float], *, zero: bool) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    return lo, hi


def _frame(title: str, x_label: str, y_label: str, kind: str, width: int = WIDTH) -> list[str]:
    return [
        f'<svg class="chart chart-{kind}" viewBox="0 0 {width} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" data-chart="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{LEFT}" y="16">{escape(title)}</text>',
        f'<text class="axis-label" x="{(LEFT + width - RIGHT) / 2}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">{escape(x_label)}</text>',
        f'<text class="axis-label" x="12" y="{(TOP + HEIGHT - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(TOP + HEIGHT - BOTTOM) / 2})">{escape(y_label)}</text>',
    ]


def _empty(parts: list[str], message: str, width: int = WIDTH) -> Markup:
    parts.append(
        f'<text class="chart-empty" x="{width / 2}" y="{HEIGHT / 2}" '
        f'text-anchor="middle">{escape(message)}</text></svg>'
    )
    return Markup("".join(parts))


def _y_axis(
    parts: list[str], lo: float, hi: float, y: Callable[[float], float], width: int = WIDTH
) -> None:
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>'
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{width - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}"/>'
    )
    for tick in _ticks(lo, hi):
        ty = y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{ty:.1f}" x2="{width - RIGHT}" y2="{ty:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">'
            f"{escape(short(tick))}</text>"
        )


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_format: Callable[[float], str] = short,
    x_data: Callable[[float], str] = number,
    y_zero: bool = True,
    empty: str = "no data yet",
    width: int = WIDTH,
    x_time: bool = False,
    lines: bool = True,
) -> Markup:
    """One polyline per series with a marker per point; ``x_format`` labels the x ticks
    and ``x_data`` writes each point's ``data-x`` (times: :func:`clock`, :func:`iso`, with
    ``x_time`` for ticks on round clock times). ``lines=False`` draws the markers only
    (a scatter of groups)."""
    parts = _frame(title, x_label, y_label, "line", width)
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    if not xs:
        return _empty(parts, empty, width)
    x_lo, x_hi = _range(xs, zero=False)
    y_lo, y_hi = _range(ys, zero=y_zero)

    def px(x: float) -> float:
        return LEFT + (x - x_lo) / (x_hi - x_lo) * (width - LEFT - RIGHT)

    def py(y: float) -> float:
        return HEIGHT - BOTTOM - (y - y_lo) / (y_hi - y_lo) * (HEIGHT - TOP - BOTTOM)

    _y_axis(parts, y_lo, y_hi, py, width)
    for tick in (_time_ticks if x_time else _ticks)(x_lo, x_hi):
        parts.append(
            f'<text class="tick" x="{px(tick):.1f}" y="{HEIGHT - BOTTOM + 14}" '
            f'text-anchor="middle">{escape(x_format(tick))}</text>'
        )
    for index, s in enumerate(series):
        css = f"series-{index % SERIES_CLASSES}"
        points = sorted(s.points)
        radius = 2.5 if len(points) <= DENSE else 1.0  # markers of a dense series: a line
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(f'<g class="series {css}" data-series="{escape(s.name)}">')
        if lines:
            parts.append(f'<polyline class="line" points="{path}"/>')
        for x, y in points:
            parts.append(
                f'<circle class="point" cx="{px(x):.1f}" cy="{py(y):.1f}" r="{radius}" '
                f'data-x="{escape(x_data(x))}" data-y="{number(y)}">'
                f"<title>{escape(s.name)}: {escape(x_format(x))} → {escape(short(y))}</title>"
                "</circle>"
            )
        parts.append("</g>")
    if len(series) > 1:
        for index, s in enumerate(series):
            lx = LEFT + 8 + index * 110
            parts.append(
                f'<g class="legend series-{index % SERIES_CLASSES}">'
                f'<rect class="swatch" x="{lx}" y="{TOP - 6}" width="10" height="4"/>'
                f'<text class="tick" x="{lx + 14}" y="{TOP - 2}">{escape(s.name)}</text></g>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Estimate2D:
    """A named point with an interval on each axis."""

    name: str
    x: float
    x_low: float
    x_high: float
    y: float
    y_low: float
    y_high: float


def scatter(
    points: Sequence[Estimate2D],
    *,
    title: str,
    x_label: str,
    y_label: str,
    empty: str = "no data yet",
) -> Markup:
    """One marker per point, named beside it, with its intervals as error bars (the
    policies' Elo under two judges)."""
    parts = _frame(title, x_label, y_label, "scatter")
    if not points:
        return _empty(parts, empty)
    x_lo, x_hi = _range([v for p in points for v in (p.x_low, p.x_high)], zero=True)
    y_lo, y_hi = _range([v for p in points for v in (p.y_low, p.y_high)], zero=True)

    def px(x: float) -> float:
        return LEFT + (x - x_lo) / (x_hi - x_lo) * (WIDTH - LEFT - RIGHT)

    def py(y: float) -> float:
        return HEIGHT - BOTTOM - (y - y_lo) / (y_hi - y_lo) * (HEIGHT - TOP - BOTTOM)

    _y_axis(parts, y_lo, y_hi, py)
    for tick in _ticks(x_lo, x_hi):
        parts.append(
            f'<text class="tick" x="{px(tick):.1f}" y="{HEIGHT - BOTTOM + 14}" '
            f'text-anchor="middle">{escape(short(tick))}</text>'
        )
    for index, p in enumerate(points):
        x, y = px(p.x), py(p.y)
        parts.append(
            f'<g class="series series-{index % SERIES_CLASSES}" data-series="{escape(p.name)}">'
            f'<line class="line" x1="{px(p.x_low):.1f}" y1="{y:.1f}" x2="{px(p.x_high):.1f}" '
            f'y2="{y:.1f}"/><line class="line" x1="{x:.1f}" y1="{py(p.y_low):.1f}" '
            f'x2="{x:.1f}" y2="{py(p.y_high):.1f}"/>'
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5" '
            f'data-x="{number(p.x)}" data-y="{number(p.y)}"><title>{escape(p.name)}: '
            f"{escape(short(p.x))}, {escape(short(p.y))}</title></circle>"
            f'<text class="tick" x="{x + 6:.1f}" y="{y - 6:.1f}">{escape(p.name)}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    empty: str = "no data yet",
) -> Markup:
    """One bar per ``(label, value)``, in the order given (a histogram: bins in order)."""
    parts = _frame(title, x_label, y_label, "bar")
    if not bars:
        return _empty(parts, empty)
    lo, hi = _range([v for _, v in bars], zero=True)

    def py(y: float) -> float:
        return HEIGHT - BOTTOM - (y - lo) / (hi - lo) * (HEIGHT - TOP - BOTTOM)

    _y_axis(parts, lo, hi, py)
    slot = (WIDTH - LEFT - RIGHT) / len(bars)
    label_every = max(1, math.ceil(len(bars) / 12))  # keep tick labels from overlapping
    for index, (label, value) in enumerate(bars):
        x = LEFT + index * slot + slot * 0.1
        top, base = sorted((py(value), py(0.0)))
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{top:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{max(base - top, 0.5):.1f}" data-label="{escape(label)}" '
            f'data-value="{number(value)}"><title>{escape(label)}: {escape(short(value))}'
            "</title></rect>"
        )
        if index % label_every == 0:
            parts.append(
                f'<text class="tick" x="{x + slot * 0.4:.1f}" y="{HEIGHT - BOTTOM + 14}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram(
    values: Sequence[float],
    *,
    bins: int = 10,
    lo: float = 0.0,
    hi: float = 1.0,
    title: str,
    x_label: str,
    y_label: str = "labels",
) -> Markup:
    """Counts of ``values`` in ``bins`` equal bins over [lo, hi] (hi falls in the last)."""
    counts = [0] * bins
    width = (hi - lo) / bins
    for value in values:
        counts[min(bins - 1, max(0, int((value - lo) / width)))] += 1
    bars = [
        (f"{lo + i * width:.2g}-{lo + (i + 1) * width:.2g}", float(c)) for i, c in enumerate(counts)
    ]
    return bar_chart(bars if values else [], title=title, x_label=x_label, y_label=y_label)
