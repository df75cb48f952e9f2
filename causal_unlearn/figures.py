"""`result.plot()` without the core importing the figures.

A result type that can be drawn subclasses `Plottable`; the package that owns the figures says
which of its functions draws each type (`register_figure`, done in `causal_unlearn/__init__.py`),
by import path, so nothing is imported until a figure is asked for. The core never imports
`causal_unlearn.viz`, and `import causal_unlearn` loads neither plotly nor ipywidgets.
"""

from __future__ import annotations

import importlib
from typing import Any


_BY_TYPE_PATH: dict[str, str] = {}  # "package.module:Class" -> "package.module:function"


def register_figure(result_type: type | str, function_path: str) -> None:
    """Let `result.plot()` call the function at `function_path` ("package.module:function"),
    which takes the result as its first argument. The type may be named by its path
    ("package.module:Class"), so that registering it imports nothing.

    Examples:
        >>> class Curve(Plottable): ...
        >>> register_figure(Curve, "json:dumps")  # any function of the result
        >>> figure_function(Curve).__name__
        'dumps'
    """
    for path in (function_path,) + ((result_type,) if isinstance(result_type, str) else ()):
        module, _, name = path.partition(":")
        if not module or not name:
            raise ValueError(f"{path!r} must read 'package.module:name'")
    if isinstance(result_type, str):
        _BY_TYPE_PATH[result_type] = function_path
    else:
        result_type.figure_path = function_path  # on the type itself, so subclasses inherit it


def figure_function(result_type: type) -> Any:
    """The function registered to draw `result_type` (or the nearest base class registered)."""
    for cls in result_type.__mro__:
        path = cls.__dict__.get("figure_path") or _BY_TYPE_PATH.get(f"{cls.__module__}:{cls.__qualname__}")
        if path is not None:
            module, _, name = path.partition(":")
            return getattr(importlib.import_module(module), name)
    raise TypeError(f"no figure is registered for {result_type.__name__}; register one with "
                    "causal_unlearn.figures.register_figure")


class Plottable:
    """Results that draw themselves: `result.plot(**kwargs)` is the registered figure function
    called on the result (for a `TraceResult`, `cu.viz.plot_trace(result, **kwargs)`)."""

    figure_path: str | None = None  # "package.module:function", set by register_figure

    def plot(self, **kwargs: Any) -> Any:
        """The result's figure; the keywords go to its figure function (see `cu.viz`)."""
        return figure_function(type(self))(self, **kwargs)
