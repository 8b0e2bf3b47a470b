"""SVG charts: a frame of grid, ticks and axis labels, then lines, stacked areas, bars, dots
and marker lines on it, placed in data units on a linear or logarithmic x axis.

Nothing here knows about a load report: html.py picks the data, the colours and the labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

_W, _H = 1040, 300  # the viewBox; CSS scales a chart down on a narrower page
_PAD_L, _PAD_R, PAD_T, PAD_B = 64, 24, 34, 44  # the top holds two rows of marker labels

Ticks = Sequence[tuple[float, str]]


def _step(span: float, parts: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) cutting span into about `parts`."""
    raw = max(span / parts, 1e-9)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(s * magnitude for s in (1, 2, 2.5, 5, 10) if s * magnitude >= raw * (1 - 1e-9))


def _tick(value: float) -> str:
    return f"{value:,.10g}"  # ten digits hide float noise such as 0.30000000000000004


def linear(high: float, parts: int = 5) -> tuple[float, list[tuple[float, str]]]:
    """The axis end, a whole number of round steps at or above high, and its ticks from 0."""
    step = _step(max(high, 1e-9), parts)
    steps = max(1, math.ceil(high / step - 1e-9))
    return step * steps, [(i * step, _tick(i * step)) for i in range(steps + 1)]


def ticks_upto(high: float, parts: int = 10) -> list[tuple[float, str]]:
    """Round ticks from 0 to high, for an axis that ends at high exactly (time)."""
    step = _step(max(high, 1e-9), parts)
    return [(i * step, _tick(i * step)) for i in range(int(high / step + 1e-9) + 1)]


def log_ticks(low: float, high: float) -> list[tuple[float, str]]:
    """Powers of ten from low to high, with 2 and 5 between them when the span is short."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1, 2, 5) if last - first <= 2 else (1,)
    values = (m * 10.0**e for e in range(first, last + 1) for m in steps)
    return [(v, _tick(float(f"{v:.6g}"))) for v in values if low <= v * (1 + 1e-9) <= high * 1.0001]


@dataclass(frozen=True)
class Plot:
    """One chart's drawing area and scales: data to SVG pixels, x linear or logarithmic."""

    x_lo: float
    x_hi: float
    y_hi: float
    log_x: bool = False
    height: int = _H
    left: int = _PAD_L

    @property
    def bottom(self) -> int:
        return self.height - PAD_B

    def x(self, v: float) -> float:
        lo, hi, v = self.x_lo, self.x_hi, min(max(v, self.x_lo), self.x_hi)
        if self.log_x:
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
        share = (v - lo) / (hi - lo) if hi > lo else 0.0
        return self.left + (_W - _PAD_R - self.left) * share

    def y(self, v: float) -> float:
        share = min(max(v / self.y_hi, 0.0), 1.0) if self.y_hi > 0 else 0.0
        return self.bottom - (self.bottom - PAD_T) * share


def svg(plot: Plot, title: str, labels: tuple[str, str], ticks: tuple[Ticks, Ticks]) -> str:
    """The frame of a chart: grid, tick labels, axes and their labels; the body goes after."""
    (x_label, y_label), (x_ticks, y_ticks) = labels, ticks
    right, bottom, mid_y = _W - _PAD_R, plot.bottom, (PAD_T + plot.bottom) / 2
    parts = [
        f'<svg viewBox="0 0 {_W} {plot.height}" width="{_W}" height="{plot.height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for v, label in y_ticks:
        y = plot.y(v)
        parts.append(
            f'<line class="grid" x1="{plot.left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{plot.left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>'
        )
    for v, label in x_ticks:
        x = plot.x(v)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{bottom}"/>'
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(label)}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{plot.left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>'
        f'<line class="axis" x1="{plot.left}" x2="{plot.left}" y1="{PAD_T}" y2="{bottom}"/>'
        f'<text x="{(plot.left + right) / 2:.0f}" y="{plot.height - 6}" text-anchor="middle">'
        f'{escape(x_label)}</text><text x="14" y="{mid_y:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {mid_y:.0f})">{escape(y_label)}</text>'
    )
    return "".join(parts)


def line(
    plot: Plot, points: Iterable[tuple[float, float | None]], colour: str, dash: bool = False
) -> str:
    """A path through the points, broken where a value is None (a second without answers)."""
    moves, down = [], False
    for x, y in points:
        if y is not None:
            moves.append(f"{'L' if down else 'M'}{plot.x(x):.1f},{plot.y(y):.1f}")
        down = y is not None
    style = ' stroke-dasharray="6 4"' if dash else ""
    return (
        f'<path d="{" ".join(moves)}" fill="none" stroke="{colour}" stroke-width="2" '
        f'stroke-linejoin="round" stroke-linecap="round"{style}/>'
        if moves
        else ""
    )


def stack(plot: Plot, xs: Sequence[float], layers: Sequence[tuple[str, Sequence[float]]]) -> str:
    """Areas stacked bottom-up in the given order, each band lying on the sum below it."""
    base, parts = [0.0] * len(xs), []
    for colour, values in layers:
        top = [b + v for b, v in zip(base, values, strict=True)]
        edge = [(x, t) for x, t in zip(xs, top, strict=True)]
        edge += [(x, b) for x, b in zip(reversed(xs), reversed(base), strict=True)]
        points = " ".join(f"{plot.x(x):.1f},{plot.y(y):.1f}" for x, y in edge)
        parts.append(f'<polygon points="{points}" fill="{colour}" fill-opacity="0.85"/>')
        base = top
    return "".join(parts)


def rects(plot: Plot, rects: Iterable[tuple[float, float, float, float, str]]) -> str:
    """Rectangles given in data units: (x0, x1, y0, y1, colour)."""
    parts = []
    for x0, x1, y0, y1, colour in rects:
        left, right, top, low = plot.x(x0), plot.x(x1), plot.y(y1), plot.y(y0)
        parts.append(
            f'<rect x="{left:.1f}" y="{top:.1f}" width="{max(right - left - 1, 1):.1f}" '
            f'height="{max(low - top, 0):.1f}" fill="{colour}" fill-opacity="0.85"/>'
        )
    return "".join(parts)


def dots(plot: Plot, dots: Iterable[tuple[float, float, str]]) -> str:
    return "".join(
        f'<circle cx="{plot.x(x):.1f}" cy="{plot.y(y):.1f}" r="4" fill="{c}"/>' for x, y, c in dots
    )


def vmarks(plot: Plot, marks: Sequence[tuple[float, str]], colour: str = "#555") -> str:
    """Dashed vertical lines labelled at the top, on two rows so that neighbours don't overlap."""
    parts = []
    for i, (x, label) in enumerate(marks):
        if not plot.x_lo <= x <= plot.x_hi:
            continue
        px, y = plot.x(x), 14 + 12 * (i % 2)
        flip = px > _W - _PAD_R - 160  # near the right edge the label goes left of its line
        anchor, tx = ("end", px - 4) if flip else ("start", px + 4)
        parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y - 10}" y2="{plot.bottom}" '
            f'stroke="{colour}" stroke-dasharray="4 3"/><text class="label" x="{tx:.1f}" '
            f'y="{y}" text-anchor="{anchor}" style="fill:{colour}">{escape(label)}</text>'
        )
    return "".join(parts)


def hmark(plot: Plot, y: float, label: str, colour: str) -> str:
    py, right = plot.y(y), _W - _PAD_R
    return (
        f'<line x1="{plot.left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}" stroke="{colour}" '
        f'stroke-dasharray="4 3"/><text class="label" x="{right - 4}" y="{py - 4:.1f}" '
        f'text-anchor="end" style="fill:{colour}">{escape(label)}</text>'
    )
