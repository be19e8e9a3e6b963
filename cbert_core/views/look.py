"""The calm look every figure shares: a light template, narrow margins, a 12 pt font.

Naming a template in a figure's layout makes plotly validate and copy the whole template (its
defaults for two dozen trace types): about 8 ms per figure, holding the interpreter lock that
every session of a shared server needs. A figure created while the template is plotly's default
gets it without that copy. So :func:`make_light_template_default` lets a long-lived process (the
app) set the default once, and :func:`calm` names the template only when the default in force is
another (a figure is given to it just after it was created). The figure is the same either way:
whichever default is in force, in whatever order plotly and Streamlit (which sets its own default
on import) were imported. (Asking the figure for its template instead would cost 1.5 ms.)
"""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

LIGHT_TEMPLATE = "plotly_white"
CALM_MARGIN = dict(l=10, r=10, t=40, b=10)
TWO_LINE_TITLE_MARGIN = dict(l=10, r=10, t=70, b=10)  # for a title from labels.wrap_title()
CALM_FONT = dict(size=12)


def make_light_template_default() -> None:
    """Make the light template plotly's default for figures created from now on, in this process.

    Only when another is in force: setting it validates and copies the whole template (10 ms holding the
    interpreter lock), and the app calls this on every script run of every session."""
    if pio.templates.default != LIGHT_TEMPLATE:
        pio.templates.default = LIGHT_TEMPLATE


def calm(figure: go.Figure, **layout: object) -> go.Figure:
    """Update ``figure``'s layout with ``layout`` over the calm look (margin and font unless given).

    ``figure`` was created under the default in force now (as every view does, just before)."""
    if pio.templates.default != LIGHT_TEMPLATE:
        layout["template"] = LIGHT_TEMPLATE
    return figure.update_layout(**{"margin": CALM_MARGIN, "font": CALM_FONT, **layout})
