"""`UnlearnDashboard`: live curves while `unlearn` runs, the official scores when it ends."""

from __future__ import annotations

import html
from typing import Any, Mapping

import ipywidgets as widgets
import plotly.graph_objects as go

from causal_unlearn.unlearning.run import UnlearnCallback
from causal_unlearn.unlearning.result import UnlearnResult
from causal_unlearn.viz.comparison import score_label
from causal_unlearn.viz.live import clear_placeholder, keep_for_reopening, show_placeholder
from causal_unlearn.viz.unlearning import mark_selected_step, unlearning_figure, update_curves

WAITING = "the curves appear here when unlearn(..., callbacks=[dashboard]) starts"


class UnlearnDashboard(UnlearnCallback):
    """Pass it to `unlearn(..., callbacks=[dashboard])` and display it: the loss terms, alpha and
    the forget / retain accuracies are redrawn every `update_every` steps (default: about 100
    redraws per run, so long runs do not flood the browser) and at each evaluation.
    With `scoring` (the keyword arguments of `evaluate`, e.g. `task.scoring()`), the official
    scores of the edited model are computed and shown at the end (`dashboard.scores`). A notebook
    saved with its widget state reopens showing the last curves.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> dashboard = UnlearnDashboard()
        >>> result = cu.unlearn(lm, world.forget[:8], world.retain[:8], layers=[0], epochs=1, lr=1e-3, batch_size=4,
        ...                     grad_accum=1, eval_every=2, callbacks=[dashboard], progress=False)
        >>> loss = next(curve for curve in dashboard.figure.data if curve.name == "loss")
        >>> list(loss.x) == [record["step"] for record in result.history]; result.revert()
        True
    """

    def __init__(self, *, scoring: Mapping[str, Any] | None = None, update_every: int | None = None):
        if update_every is not None and update_every < 1:
            raise ValueError(f"update_every must be a positive integer or None, got {update_every!r}")
        self.scoring, self.update_every, self._every = scoring, update_every, update_every or 1
        # as wide as the notebook's output area, not the static figure's 1200 px
        self.figure = go.FigureWidget(show_placeholder(unlearning_figure(), WAITING).update_layout(width=None))
        self.status = widgets.HTML("waiting for <code>unlearn(..., callbacks=[dashboard])</code>")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="40%"))
        self.score_table = widgets.HTML()
        self.widget = widgets.VBox([widgets.HBox([self.progress, self.status]), self.figure, self.score_table])
        self.history: list[dict[str, float]] = []
        self.evaluations: list[dict[str, float]] = []
        self.scores = None

    def on_train_begin(self, settings: Mapping[str, Any]) -> None:
        self.history, self.evaluations, self.scores = [], [], None
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.layout.shapes = ()
            clear_placeholder(self.figure)
            self.figure.layout.title = (f"{settings['objective']} on {settings['modules']} of layers "
                                        f"{', '.join(map(str, settings['layers']))}")
        self.progress.max, self.progress.value = settings["total_steps"], 0
        self._every = self.update_every or max(1, settings["total_steps"] // 100)
        self.score_table.value = ""
        self._say(f"unlearning: {settings['n_forget']} forget / {settings['n_retain']} retain rows, "
                  f"{settings['total_steps']} steps")

    def on_step(self, record: Mapping[str, float]) -> None:
        self.history.append(dict(record))
        self.progress.value = int(record["step"])
        if len(self.history) % self._every == 0:
            self._redraw()

    def on_evaluate(self, record: Mapping[str, float]) -> None:
        self.evaluations.append(dict(record))
        self._redraw()
        accuracy = {k: record[k] for k in ("forget_answer_accuracy", "retain_answer_accuracy") if k in record}
        self._say(f"step {record['step']}: " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in accuracy.items()))

    def on_train_end(self, result: UnlearnResult) -> None:
        self.history, self.evaluations = list(result.history), list(result.evaluations)
        self._redraw(selected_step=result.selected_step)
        self._say(f"done in {result.seconds:.0f} s; the model holds step {result.selected_step}'s weights")
        if self.scoring is not None:
            from causal_unlearn.evaluation.semeval import evaluate

            self._say(f"done in {result.seconds:.0f} s; scoring the edited model…")
            self.scores = evaluate(result.model, **{"progress": False, **self.scoring})
            self.score_table.value = _score_html(self.scores.to_dict())
            self._say(f"done in {result.seconds:.0f} s (kept step {result.selected_step}); "
                      f"final score {_number(self.scores.final)}")

    def _redraw(self, selected_step: int | None = None) -> None:
        with self.figure.batch_update():
            update_curves(self.figure, self.history, self.evaluations)
        if selected_step is not None:  # outside batch_update, where plotly's add_vline fails
            mark_selected_step(self.figure, selected_step)
        keep_for_reopening(self.figure)

    def _say(self, message: str) -> None:
        self.status.value = html.escape(message)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _score_html(scores: Mapping[str, float | None]) -> str:
    """The official scores as a table, named as the notebooks and figures name them.

    Examples:
        >>> _score_html({"Task2/forget_knowledge": 0.25, "mia_auc": None})
        '<table><tr><th>official score</th><th>value</th></tr><tr><td>forget QA</td><td>0.250</td></tr><tr><td>MIA AUC</td><td>n/a</td></tr></table>'
    """
    rows = "".join(f"<tr><td>{html.escape(score_label(name))}</td><td>{_number(value)}</td></tr>"
                   for name, value in scores.items())
    return f"<table><tr><th>official score</th><th>value</th></tr>{rows}</table>"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
