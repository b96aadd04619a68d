"""The console's charts: SVG drawn on the server by pygal, inlined in the page (nothing loaded
from elsewhere: the machines may reach no internet). One series per chart, titled and with its
values printed, so no chart depends on colour to be read; each sits next to its table."""

from __future__ import annotations

from collections.abc import Sequence

import pygal
from markupsafe import Markup
from pygal.style import Style

STYLE = Style(background="white", plot_background="white", foreground="#1a202c",
              foreground_strong="#1a202c", foreground_subtle="#a0aec0", colors=("#2b6cb0",),
              font_family="system-ui, sans-serif", title_font_size=14, label_font_size=11,
              value_font_size=10, major_label_font_size=11)
COMMON = {"js": [], "disable_xml_declaration": True, "style": STYLE, "show_legend": False,
          "margin": 8, "show_y_guides": True}


def _svg(chart, values: Sequence, label: str) -> Markup:
    chart.add(label, list(values))
    return Markup(chart.render(is_unicode=True))


def bars(title: str, labels: Sequence[str], values: Sequence[float | None], *,
         width: int = 520, height: int = 220) -> Markup:
    """A bar per label, its value printed on it."""
    chart = pygal.Bar(title=title, width=width, height=height, print_values=True,
                      x_labels=list(labels), x_label_rotation=0 if len(labels) <= 8 else 30,
                      **COMMON)
    return _svg(chart, values, title)


def line(title: str, labels: Sequence[str], values: Sequence[float | None], *,
         width: int = 760, height: int = 240) -> Markup:
    """A time series: a dot per point, labels thinned to stay readable."""
    chart = pygal.Line(title=title, width=width, height=height, x_labels=list(labels),
                       x_labels_major_count=8, show_minor_x_labels=False, x_label_rotation=20,
                       dots_size=2, show_dots=len(values) <= 300, **COMMON)
    return _svg(chart, values, title)


def sparkline(values: Sequence[float], title: str) -> Markup:
    """A tiny bar chart for a table cell (the numbers sit in the cells beside it)."""
    chart = pygal.Bar(width=160, height=48, show_x_labels=False, show_y_labels=False,
                      title=None, **{**COMMON, "margin": 2, "show_y_guides": False})
    return _svg(chart, values, title)
