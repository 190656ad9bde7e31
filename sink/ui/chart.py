"""The overview's per-minute chart, as SVG geometry computed on the server (pure: no I/O).

Only numbers reach the template: the SVG carries no text taken from events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

WIDTH = 720
HEIGHT = 160
PAD_LEFT = 36
PAD_BOTTOM = 18
PAD_TOP = 8


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(slots=True)
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Bar] = field(default_factory=list)
    line: str = ""  # SVG polyline points for deliveries per minute
    max_value: int = 0
    total_events: int = 0
    total_deliveries: int = 0
    ticks: list[tuple[float, str]] = field(default_factory=list)
    plot_left: int = PAD_LEFT
    plot_bottom: int = HEIGHT - PAD_BOTTOM
    plot_top: int = PAD_TOP


def per_minute_chart(
    rows: Iterable[tuple[datetime, int, int]], *, now: datetime, minutes: int
) -> Chart:
    """Events (bars) and deliveries (line) per minute for the `minutes` up to `now`."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    deliveries = [0] * minutes
    events = [0] * minutes
    for minute, d, e in rows:
        index = int((minute - start).total_seconds() // 60)
        if 0 <= index < minutes:
            deliveries[index] += int(d)
            events[index] += int(e)
    chart = Chart(
        max_value=max([*events, *deliveries, 1]),
        total_events=sum(events),
        total_deliveries=sum(deliveries),
    )
    plot_width = WIDTH - PAD_LEFT
    plot_height = chart.plot_bottom - PAD_TOP
    step = plot_width / minutes
    scale = plot_height / chart.max_value
    points = []
    for i in range(minutes):
        x = PAD_LEFT + i * step
        if events[i]:
            h = events[i] * scale
            label = (start + timedelta(minutes=i)).strftime("%H:%M")
            chart.bars.append(
                Bar(
                    x=round(x, 2),
                    y=round(chart.plot_bottom - h, 2),
                    width=round(max(step - 1, 1), 2),
                    height=round(h, 2),
                    title=f"{label} UTC: {events[i]} events, {deliveries[i]} deliveries",
                )
            )
        y = chart.plot_bottom - deliveries[i] * scale
        points.append(f"{x + step / 2:.1f},{y:.1f}")
    chart.line = " ".join(points)
    every = max(minutes // 6, 1)
    for i in range(0, minutes, every):
        label = (start + timedelta(minutes=i)).strftime("%H:%M")
        chart.ticks.append((round(PAD_LEFT + i * step, 2), label))
    return chart
