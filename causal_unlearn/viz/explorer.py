"""`TraceExplorer`: type a fact, pick the settings, see its causal trace update in place."""

from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go

from causal_unlearn.models.loader import LoadedModel, require_loaded
from causal_unlearn.tracing import KINDS, default_window
from causal_unlearn.tracing.result import TraceResult
from causal_unlearn.tracing.trace import trace
from causal_unlearn.viz.live import keep_for_reopening, show_placeholder
from causal_unlearn.viz.trace import plot_trace

ALL_KINDS = "all three"
WITH_HEADS = "all three + heads"
HEAD_KIND = "head"  # traced one attention head at a time: drawn as layer x head panels below the others


class TraceExplorer:
    """A causal-trace explorer for Jupyter: prompt, subject and (optional) answer boxes; kind,
    window, samples and metric controls; a Trace button. The heatmap (a plotly `FigureWidget`)
    is redrawn in place; hovering a cell shows its value and the top-5 next tokens with that
    cell restored. The kind "head" (or "all three + heads") adds layer x head panels of the
    attention heads at the last subject token and the last token below. Display it by leaving
    it last in a cell; a notebook saved with its widget state reopens showing the last trace.

    Examples:
        >>> import causal_unlearn as cu
        >>> explorer = TraceExplorer(cu.load_model("olmo-tiny-bios"), "Otto Russet lives in", "Otto Russet")
        >>> explorer.kind.value, explorer.window.value = "mlp", 1
        >>> explorer.samples.value = 2
        >>> explorer.trace_button.click()
        >>> explorer.result.kinds, [panel.name for panel in explorer.figure.data]
        (['mlp'], ['mlp'])
    """

    def __init__(self, model: LoadedModel, prompt: str = "", subject: str = "", answer: str = "", *,
                 seed: int = 0, top_predictions: int = 5):
        self.model = require_loaded(model, "TraceExplorer")
        self.seed, self.top_predictions = seed, top_predictions
        self.result: TraceResult | None = None
        self.prompt = widgets.Text(value=prompt, description="prompt", placeholder="Otto Russet lives in",
                                   layout=widgets.Layout(width="60%"))
        self.subject = widgets.Text(value=subject, description="subject", placeholder="as written in the prompt")
        self.answer = widgets.Text(value=answer, description="answer", placeholder="(model's top-1)")
        self.kind = widgets.Dropdown(options=[ALL_KINDS, WITH_HEADS, *KINDS, HEAD_KIND],
                                     value=ALL_KINDS, description="kind")
        self.window = widgets.IntSlider(value=default_window(self.model.n_layers), min=1, max=self.model.n_layers,
                                        description="window")
        self.samples = widgets.IntSlider(value=10, min=1, max=50, description="samples")
        self.metric = widgets.Dropdown(options=[("p(answer)", "prob"), ("log p(answer)", "logprob")], value="prob",
                                       description="metric")
        self.trace_button = widgets.Button(description="Trace", button_style="primary", icon="play")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="", layout=widgets.Layout(width="30%"))
        self.status = widgets.HTML()
        self.figure = go.FigureWidget(show_placeholder(go.Figure(layout=dict(height=360)),
                                                       "press Trace to draw the causal trace"))
        self.trace_button.on_click(lambda _: self.run())
        self.widget = widgets.VBox([
            widgets.HBox([self.prompt, self.subject, self.answer]),
            widgets.HBox([self.kind, self.window, self.samples, self.metric]),
            widgets.HBox([self.trace_button, self.progress, self.status]),
            self.figure,
        ])

    def run(self) -> TraceResult | None:
        """Trace with the current settings and redraw; errors (a subject not in the prompt, ...)
        are shown in the status line, not raised."""
        kinds = _kinds(self.kind.value)
        self.trace_button.disabled = True
        self.progress.max, self.progress.value = len(kinds), 0
        try:
            result = None
            for kind in kinds:  # one kind at a time, so the progress bar moves; the same seed gives the same noise
                self._say(f"tracing {kind} ({kinds.index(kind) + 1}/{len(kinds)})…")
                part = trace(self.model, self.prompt.value, self.subject.value, answer=self.answer.value or None,
                             kinds=(kind,), samples=self.samples.value, window=self.window.value,
                             metric=self.metric.value, seed=self.seed, top_predictions=self.top_predictions,
                             progress=False)
                result = part if result is None else _merged(result, part)
                self.progress.value += 1
        except (ValueError, RuntimeError) as error:
            self._say(f"<span style='color:#D55E00'>{html.escape(str(error))}</span>")
            return None
        finally:
            self.trace_button.disabled = False
        self.result = result
        self._redraw(plot_trace(result, decode=self.model.tokenizer.decode))
        known = "" if result.known else f" — the model predicts {result.clean_prediction!r} instead (known=False)"
        self._say(f"p({result.answer!r}): clean {result.high:.3f}, corrupted {result.low:.3f}{html.escape(known)}")
        return result

    def _redraw(self, fig: go.Figure) -> None:
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.add_traces(list(fig.data))
            self.figure.layout = fig.layout
            self.figure.layout.width = None  # as wide as the notebook's output area
        keep_for_reopening(self.figure)

    def _say(self, message: str) -> None:
        self.status.value = message

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _kinds(choice: str) -> list[str]:
    """The kinds a dropdown choice traces, one after the other."""
    if choice == ALL_KINDS:
        return list(KINDS)
    return [*KINDS, HEAD_KIND] if choice == WITH_HEADS else [choice]


def _merged(first: TraceResult, other: TraceResult) -> TraceResult:
    first.scores |= other.scores
    first.top_ids |= other.top_ids
    first.top_probs |= other.top_probs
    return first
