"""The figures' shared look: the light template whatever plotly's default is, without a copy of it per figure when
it is the default."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from cbert_core.views.look import CALM_MARGIN, LIGHT_TEMPLATE, TWO_LINE_TITLE_MARGIN, calm, make_light_template_default


@pytest.mark.parametrize("default", [None, "plotly", "ggplot2", "plotly_dark", LIGHT_TEMPLATE])
def test_a_calm_figure_has_the_light_template_whatever_the_default(default, monkeypatch) -> None:
    monkeypatch.setattr(pio.templates, "default", default)
    figure = calm(go.Figure(go.Heatmap(z=[[0.1, 0.9]])), title="weights", height=300)
    assert figure.layout.template == pio.templates[LIGHT_TEMPLATE]
    assert figure.layout.title.text == "weights" and figure.layout.height == 300
    assert figure.layout.margin.to_plotly_json() == CALM_MARGIN and figure.layout.font.size == 12
    assert calm(go.Figure(), margin=TWO_LINE_TITLE_MARGIN).layout.margin.to_plotly_json() == TWO_LINE_TITLE_MARGIN


@pytest.fixture
def made(monkeypatch) -> list[int]:
    """One entry per template plotly makes (validates and copies) from now on; plotly's own default in force."""
    monkeypatch.setattr(pio.templates, "default", "plotly")
    made: list[int] = []
    template_init = go.layout.Template.__init__

    def counting_init(self, *args, **kwargs):
        made.append(1)
        template_init(self, *args, **kwargs)

    monkeypatch.setattr(go.layout.Template, "__init__", counting_init)
    return made


def test_under_the_light_default_a_figure_is_not_given_a_copy_of_the_template(made) -> None:
    figure = go.Figure()
    made.clear()
    calm(figure, title="named")
    assert made  # another default: the template is named, so plotly validates a copy of it
    make_light_template_default()
    assert pio.templates.default == LIGHT_TEMPLATE
    figure = go.Figure(go.Scatter(y=[1, 2]))  # created with the default's template (plotly copies it then, once)
    made.clear()
    calm(figure, title="default")
    assert not made  # no second copy of the template: 8 ms of the interpreter lock per figure
    assert figure.layout.template == pio.templates[LIGHT_TEMPLATE]


def test_making_the_light_template_default_again_copies_nothing(made) -> None:
    make_light_template_default()
    assert made and pio.templates.default == LIGHT_TEMPLATE  # another default was in force: set (and copied)
    made.clear()
    make_light_template_default()  # every later script run
    assert not made and pio.templates.default == LIGHT_TEMPLATE
