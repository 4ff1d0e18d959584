"""Charts drawn on the server as SVG (pygal), inlined in the page: nothing is fetched.

pygal escapes every label it writes into the SVG, and its optional JavaScript (tooltips,
loaded from the internet) is switched off: the console's Content-Security-Policy allows
no script anyway, and the charts read the same without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from xml.etree import ElementTree

import pygal
from markupsafe import Markup
from pygal.style import Style

from bots.console.forecast import SeriesForecast
from bots.console.metrics import Metrics

STYLE = Style(background="white", plot_background="white", foreground="#1d1d1f",
              foreground_strong="#1d1d1f", foreground_subtle="#9aa0a6",
              colors=("#2f6db5", "#e07b39", "#3a9e5c", "#b5452f", "#7a55b5", "#8a8a8a"),
              font_family="system-ui, sans-serif", title_font_size=16, label_font_size=11,
              major_label_font_size=11, legend_font_size=12)
BASE: dict[str, Any] = {"style": STYLE, "js": [], "disable_xml_declaration": True,
                        "width": 640, "height": 300, "explicit_size": False,
                        "print_values": False, "show_legend": False, "truncate_label": 24}


def _svg(chart: Any) -> Markup:
    """The chart's SVG without pygal's inline config script (labels would sit in JSON there).

    pygal builds the SVG as an XML tree, so text is escaped by the XML library; scripts are
    taken out of the tree before it is written.
    """
    tree = chart.render_tree()
    for parent in list(tree.iter()):
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    text = ElementTree.tostring(tree, encoding="unicode") if isinstance(
        tree, ElementTree.Element) else _lxml_text(tree)
    return Markup(text)  # noqa: S704 - serialised by the XML library


def _lxml_text(tree: Any) -> str:
    from lxml import etree

    return str(etree.tostring(tree, encoding="unicode"))


def bars(title: str, values: Mapping[str, float], *, money: bool = False,
         top: int = 10) -> Markup:
    chart = pygal.HorizontalBar(title=title, **BASE)
    items = sorted(values.items(), key=lambda kv: kv[1], reverse=True)[:top]
    for label, value in reversed(items):
        chart.add(label, [round(value, 2)])
    chart.x_labels = []
    chart.show_legend = True
    chart.legend_at_bottom = True
    if money:
        chart.value_formatter = _short  # the value axis: 10k, not 10,000.00
    return _svg(chart)


def _short(value: float) -> str:
    """Axis labels that fit: 12k, 1.5M."""
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    return f"{value / 1000:.0f}k" if abs(value) >= 1000 else f"{value:.0f}"


def daily(title: str, series: Mapping[str, Mapping[date, float]], *,
          money: bool = False) -> Markup:
    days = sorted({d for values in series.values() for d in values})
    chart = pygal.Line(title=title, x_label_rotation=30, show_dots=False, fill=False,
                       show_minor_x_labels=False, x_labels_major_every=max(1, len(days) // 8),
                       **{**BASE, "show_legend": len(series) > 1, "legend_at_bottom": True})
    chart.x_labels = [d.strftime("%m-%d") for d in days]
    for name, values in series.items():
        chart.add(name, [round(float(values.get(d, 0)), 2) for d in days])
    if money:
        chart.value_formatter = lambda v: f"{v:,.0f}"
    return _svg(chart)


def dashboard(m: Metrics) -> dict[str, Markup]:
    return {
        "opened": daily("Cases opened per day", {"cases": _f(m.opened_by_day)}),
        "amount_day": daily("Refunded per day", {"refunded": m.by_day}, money=True),
        "reason": bars("Refunded by reason", m.by_reason, money=True),
        "channel": bars("Refunded by channel", m.by_channel, money=True),
        "category": bars("Refunded by SKU category", m.by_category, money=True),
        "trouble": daily("System errors and reconciliation breaks per day",
                         {"system errors": _f(m.failures_by_day),
                          "reconciliation breaks": _f(m.breaks_by_day)}),
        "escalations": bars("Escalations by reason", {k: float(v) for k, v in
                                                        m.escalation_reasons.items()}),
    }


def forecast_chart(fc: SeriesForecast, last_days: int = 56) -> Markup:
    """The last weeks of history and the next 28 days, on one time axis."""
    history = fc.history.iloc[-last_days:]
    chart = pygal.Line(title=f"{fc.name}: history and forecast ({fc.model})",
                       x_label_rotation=30, show_dots=False, show_minor_x_labels=False,
                       x_labels_major_every=7, **{**BASE, "show_legend": True,
                                                   "legend_at_bottom": True, "width": 900})
    labels = [d.strftime("%m-%d") for d in (*history.index, *fc.path.index)]
    chart.x_labels = labels
    chart.add("history", [round(float(v), 1) for v in history] + [None] * len(fc.path))
    chart.add("forecast", [None] * (len(history) - 1) + [round(float(history.iloc[-1]), 1)]
              + [round(float(v), 1) for v in fc.path])
    return _svg(chart)


def _f(values: Mapping[date, int] | Mapping[date, float]) -> dict[date, float]:
    return {k: float(v) for k, v in values.items()}
