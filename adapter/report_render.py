"""The weekly review as JSON, CSV or one self-contained HTML page (inline CSS and SVG charts
drawn here, no script, nothing fetched), from a `adapter.report.Report`.

Every number in the CSV carries the referral keys behind it; in the HTML they are in each
figure's tooltip. Texts are escaped; the report holds identifiers and counts, never PHI.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from datetime import timedelta
from html import escape

from adapter.report import DEFINITIONS, Number, Report, week_label

__all__ = ["CSV_COLUMNS", "charts", "render", "render_csv", "render_html", "render_json"]

DIMENSIONS = ("segment", "source", "band", "item", "request_from", "owner_role", "week", "stage")
CSV_COLUMNS = ("metric", *DIMENSIONS, "value", "referral_count", "referrals")
# One colour per segment, in precedence order (colour-blind safe, Okabe-Ito).
PALETTE = ("#D55E00", "#CC79A7", "#009E73", "#E69F00", "#0072B2", "#56B4E9", "#999999")
TOOLTIP_KEYS = 25


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown format {fmt!r}")


def render_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=1, sort_keys=False) + "\n"


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for number in report.numbers:
        by = dict(number.by)
        writer.writerow(
            [
                number.metric,
                *(by.get(d, "") for d in DIMENSIONS),
                _fmt(number.value),
                len(number.referrals),
                " ".join(number.referrals),
            ]
        )
    return out.getvalue()


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def _tip(number: Number | None, what: str) -> str:
    if number is None or not number.referrals:
        return escape(what)
    keys = number.referrals
    shown = ", ".join(keys[:TOOLTIP_KEYS])
    more = f" and {len(keys) - TOOLTIP_KEYS} more" if len(keys) > TOOLTIP_KEYS else ""
    return escape(f"{what}: {shown}{more}")


def _lookup(numbers: Iterable[Number], *keys: str) -> dict[tuple[str, ...], Number]:
    return {tuple(n.dim(k) or "" for k in keys): n for n in numbers}


# --- charts ----------------------------------------------------------------------------------


def _heatmap(report: Report) -> str:
    cells = _lookup([n for n in report.numbers if n.metric == "aging"], "segment", "band")
    bands = list(report.bands)
    if any(key[1] == "undated" for key in cells):
        bands.append("undated")
    top = max((n.value for n in cells.values()), default=0) or 1
    left, size, head = 150, 64, 40
    width, height = left + size * len(bands) + 10, head + 34 * len(report.segments) + 10
    parts = [_svg_open(width, height, "Open referrals by segment and aging band at period end")]
    for j, band in enumerate(bands):
        x = left + j * size + size / 2
        parts.append(f'<text x="{x}" y="{head - 12}" text-anchor="middle">{escape(band)}</text>')
    for i, segment in enumerate(report.segments):
        y = head + i * 34
        parts.append(
            f'<text x="{left - 8}" y="{y + 21}" text-anchor="end">{escape(segment)}</text>'
        )
        for j, band in enumerate(bands):
            number = cells.get((segment, band))
            value = number.value if number else 0
            shade = value / top
            fill = f"rgba(213,94,0,{0.08 + 0.86 * shade:.2f})" if value else "#f4f4f4"
            ink = "#fff" if shade > 0.55 else "#222"
            x = left + j * size
            parts.append(
                f"<g><title>{_tip(number, f'{segment}, {band} days: {_fmt(value)}')}</title>"
                f'<rect x="{x + 1}" y="{y + 1}" width="{size - 2}" height="32" fill="{fill}"/>'
                f'<text x="{x + size / 2}" y="{y + 21}" text-anchor="middle" fill="{ink}">'
                f"{_fmt(value)}</text></g>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _trends(report: Report) -> str:
    numbers = [n for n in report.numbers if n.metric == "trend_inventory"]
    end, step_back = report.period.end, timedelta(days=7)
    weeks = [
        week_label(end - k * step_back) for k in range(report.settings.trend_weeks - 1, -1, -1)
    ]
    cells = _lookup(numbers, "week", "segment")
    top = max((n.value for n in numbers), default=0) or 1
    left, right, head, plot_h = 40, 170, 15, 180
    step = 64
    width = left + step * max(len(weeks) - 1, 1) + right
    height = head + plot_h + 40
    parts = [_svg_open(width, height, "Open referrals per segment at the end of each week")]
    for k in range(5):
        value = top * k / 4
        y = head + plot_h - plot_h * k / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right + 10}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#ddd"/><text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{value:.0f}</text>"
        )
    for j, week in enumerate(weeks):
        x = left + j * step
        parts.append(
            f'<text x="{x}" y="{head + plot_h + 18}" text-anchor="middle">{escape(week[5:])}</text>'
        )
    for i, segment in enumerate(report.segments):
        colour = PALETTE[i % len(PALETTE)]
        points = []
        for j, week in enumerate(weeks):
            number = cells.get((week, segment))
            value = number.value if number else 0
            x, y = left + j * step, head + plot_h - plot_h * value / top
            points.append(f"{x},{y:.1f}")
            parts.append(
                f'<circle cx="{x}" cy="{y:.1f}" r="3.5" fill="{colour}"><title>'
                f"{_tip(number, f'{segment}, {week}: {_fmt(value)}')}</title></circle>"
            )
        parts.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
            f'stroke-width="2"/>'
        )
        ly = head + 14 + i * 18
        lx = width - right + 20
        parts.append(
            f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{ly}">{escape(segment)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _bars(title: str, rows: Sequence[tuple[str, Number | None]], colour: str) -> str:
    if not rows:
        return "<p>Nothing to show for this period.</p>"
    top = max((n.value for _, n in rows if n is not None), default=0) or 1
    left, bar_w, line = 230, 360, 28
    width, height = left + bar_w + 60, line * len(rows) + 10
    parts = [_svg_open(width, height, title)]
    for i, (label, number) in enumerate(rows):
        value = number.value if number else 0
        y = 5 + i * line
        w = max(bar_w * value / top, 1 if value else 0)
        parts.append(
            f"<g><title>{_tip(number, f'{label}: {_fmt(value)}')}</title>"
            f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{escape(label[:34])}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="20" fill="{colour}"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + 17}">{_fmt(value)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_open(width: float, height: float, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'font-family="system-ui, sans-serif" font-size="12"><title>{escape(title)}</title>'
    )


# --- tables ----------------------------------------------------------------------------------


def _cell(number: Number | None, what: str) -> str:
    value = _fmt(number.value) if number else "0"
    return f'<td title="{_tip(number, what)}">{value}</td>'


def _movement(report: Report) -> str:
    metrics = ("inventory_start", "entered", "left", "inventory_end")
    found = {
        m: _lookup([n for n in report.numbers if n.metric == m and len(n.by) == 1], "segment")
        for m in metrics
    }
    rows = []
    for segment in report.segments:
        cells = "".join(_cell(found[m].get((segment,)), f"{segment} {m}") for m in metrics)
        rows.append(f"<tr><th>{escape(segment)}</th>{cells}</tr>")
    head = "".join(f"<th>{escape(m.replace('_', ' '))}</th>" for m in metrics)
    return f"<table><tr><th>segment</th>{head}</tr>{''.join(rows)}</table>"


def _rows(numbers: Iterable[Number], dims: Sequence[str]) -> str:
    rows = []
    for number in numbers:
        labels = "".join(f"<td>{escape(number.dim(d) or '')}</td>" for d in dims)
        what = escape(number.metric.replace("_", " "))
        rows.append(f"<tr><td>{what}</td>{labels}{_cell(number, number.metric)}</tr>")
    if not rows:
        return "<p>None in this period.</p>"
    head = "".join(f"<th>{escape(d.replace('_', ' '))}</th>" for d in dims)
    return f"<table><tr><th>what</th>{head}<th>count</th></tr>{''.join(rows)}</table>"


def _card(report: Report, metric: str, label: str) -> str:
    found = [n for n in report.numbers if n.metric == metric and not n.by]
    number = found[0] if found else None
    value = _fmt(number.value) if number else "-"
    return (
        f'<div class="card" title="{_tip(number, DEFINITIONS.get(metric, metric))}">'
        f'<div class="v">{value}</div><div class="l">{escape(label)}</div></div>'
    )


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;border-radius:6px;
padding:8px 12px;min-width:120px}.v{font-size:22px;font-weight:600}.l{font-size:12px;color:#555}
.note{font-size:12px;color:#555}dl{font-size:12px}dt{font-weight:600}
"""


def charts(report: Report) -> dict[str, str]:
    """The report's four charts as inline SVG markup (every text in them escaped)."""
    numbers = report.numbers
    funnel_numbers = _lookup([n for n in numbers if n.metric == "funnel"], "stage")
    funnel = [
        (stage, funnel_numbers.get((stage,)))
        for stage in ("received", "ready-to-schedule", "scheduled")
    ]
    missing_sources = sorted(
        (
            n
            for n in numbers
            if n.metric == "inventory_end"
            and n.dim("segment") == "missing-detail"
            and n.dim("source") is not None
        ),
        key=lambda n: (-n.value, n.dim("source") or ""),
    )[:10]
    return {
        "heatmap": _heatmap(report),
        "trends": _trends(report),
        "funnel": _bars("Referrals received in the period, by stage reached", funnel, "#0072B2"),
        "sources": _bars(
            "Open missing-detail referrals at period end by source",
            [(n.dim("source") or "", n) for n in missing_sources],
            "#E69F00",
        ),
    }


def render_html(report: Report) -> str:
    numbers = report.numbers
    drawn = charts(report)
    period = report.period
    cards = "".join(
        _card(report, metric, label)
        for metric, label in (
            ("received", "received"),
            ("ready_scheduled", "ready-to-schedule -> scheduled"),
            ("ready_days_median", "days to schedule (median)"),
            ("ready_days_p90", "days to schedule (p90)"),
            ("missing_stale", f"missing-detail > {report.settings.stale_missing_days} days"),
            ("patient_active_repeat_contact", "patient-active, >1 contact"),
            ("attempts_per_referral", "attempts per patient-active referral"),
            ("status_asked", "offices asking for status"),
            ("leak_closed_without_appointment", "closed without appointment"),
            ("leak_revoked", "revoked"),
            ("leak_open_past_limit", f"open > {report.settings.open_limit_days} days"),
        )
    )
    items = [n for n in numbers if n.metric == "missing_items" and n.dim("request_from")]
    items.sort(key=lambda n: -n.value)
    follow = [n for n in numbers if n.metric.startswith("follow_up_")]
    leaks = [n for n in numbers if n.metric.startswith("leak_") and n.by]
    asked = [n for n in numbers if n.metric == "status_asked" and n.by]
    definitions = "".join(
        f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in DEFINITIONS.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Referral review {escape(period.label)}</title>
<style>{CSS}</style></head><body>
<h1>Weekly referral review: {escape(period.label)}</h1>
<p class="note">From {escape(period.start.isoformat())} to {escape(period.end.isoformat())}
(end excluded). Hover a number for the referrals behind it; the CSV lists them all.</p>
<div class="cards">{cards}</div>
<h2>Movement by segment</h2>{_movement(report)}
<h2>Aging at period end</h2>{drawn["heatmap"]}
<h2>Weekly trend</h2>{drawn["trends"]}
<h2>Funnel: received to scheduled</h2>{drawn["funnel"]}
<h2>Sources with most missing-detail referrals</h2>{drawn["sources"]}
<h2>What the stale missing-detail referrals lack</h2>
{_rows(items, ("item", "request_from"))}
<h2>Follow-up standard</h2>{_rows(follow, ("segment", "owner_role"))}
<h2>Leakage by source</h2>{_rows(leaks, ("source",))}
<h2>Offices that asked for status</h2>{_rows(asked, ("source",))}
<h2>Definitions</h2><dl>{definitions}</dl>
</body></html>
"""
