"""Live figures for the widgets: a plotly `FigureWidget` that says what will appear before
anything is drawn, and whose saved state follows what it shows, so that a notebook saved with
its widget state reopens with the last figure."""

from __future__ import annotations

import copy

import plotly.graph_objects as go

PLACEHOLDER = "placeholder"  # the name of the annotation an empty live figure shows


def show_placeholder(fig: go.Figure, text: str) -> go.Figure:
    """Hide `fig`'s axes and say in its middle what will be drawn there (instead of bare axes
    from -1 to 6). Returns the same figure.

    Examples:
        >>> fig = show_placeholder(go.Figure(), "press Trace")
        >>> [a.text for a in fig.layout.annotations], fig.layout.xaxis.visible
        (['press Trace'], False)
    """
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=text, name=PLACEHOLDER, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font=dict(size=14, color="grey"))
    return fig


def clear_placeholder(fig: go.Figure) -> go.Figure:
    """Undo `show_placeholder`: the axes come back, the message goes. Returns the same figure.

    Examples:
        >>> fig = clear_placeholder(show_placeholder(go.Figure(), "press Trace"))
        >>> fig.layout.annotations, fig.layout.xaxis.visible
        ((), True)
    """
    fig.update_xaxes(visible=True)
    fig.update_yaxes(visible=True)
    fig.layout.annotations = [a for a in fig.layout.annotations if a.name != PLACEHOLDER]
    return fig


def keep_for_reopening(widget: go.FigureWidget) -> None:
    """Make what `widget` shows the state a saved notebook stores for it.

    plotly draws changes made after display from one-off messages and stores only the figure
    the widget was displayed with (`_widget_data`, `_widget_layout`), so a notebook reopened
    later would show that first, empty figure. The browser ignores changes to these two fields
    (they are not redrawn), so copying the current figure into them costs one message.

    Examples:
        >>> widget = go.FigureWidget()
        >>> _ = widget.add_bar(y=[1, 2])
        >>> keep_for_reopening(widget); [trace["type"] for trace in widget._widget_data]
        ['bar']
    """
    widget._widget_layout = copy.deepcopy(widget._layout_obj._props)
    widget._widget_data = copy.deepcopy(widget._data)
