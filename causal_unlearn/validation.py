"""Checks of user-given settings, shared by every stage so that each error reads the same way.

Integers may be Python, numpy or 0-d torch integers (anything `operator.index` accepts, never a
bool); numbers must be finite. A value of the wrong type raises TypeError, one out of range
ValueError, as Python's own functions do.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections.abc import Iterable
from typing import Any


def integer(name: str, value: Any, *, minimum: int | None = None) -> int:
    """`value` as a Python int, or an error naming `name`.

    Examples:
        >>> import numpy as np
        >>> integer("samples", np.int64(3), minimum=1)
        3
        >>> integer("samples", 0, minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: samples must be an integer >= 1, got 0
    """
    bound = f" >= {minimum}" if minimum is not None else ""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer{bound}, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be an integer{bound}, got {number}")
    return number


def finite(name: str, value: Any, *, above: float | None = None, at_least: float | None = None) -> float:
    """`value` as a finite float (optionally > `above` or >= `at_least`), or an error naming `name`.

    Examples:
        >>> finite("lr", 1e-3, above=0)
        0.001
        >>> finite("lr", float("nan"), above=0)
        Traceback (most recent call last):
        ...
        ValueError: lr must be a finite number > 0, got nan
    """
    bound = f" > {above:g}" if above is not None else f" >= {at_least:g}" if at_least is not None else ""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a finite number{bound}, got {value!r}")
    if not math.isfinite(value) or (above is not None and not value > above) or (at_least is not None and not value >= at_least):
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def text(name: str, value: Any) -> str:
    """`value` if it is a string, else a TypeError naming `name`.

    Examples:
        >>> text("prompt", ["Otto Russet lives in"])
        Traceback (most recent call last):
        ...
        TypeError: prompt must be a string, got a list: ['Otto Russet lives in']
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got a {type(value).__name__}: {value!r:.80}")
    return value


def choice(name: str, value: Any, options: Iterable[Any]) -> Any:
    """`value` if it is one of `options` (or None, meaning all), else a ValueError listing them.

    Examples:
        >>> choice("split", "test", ("forget", "retain"))
        Traceback (most recent call last):
        ...
        ValueError: unknown split 'test'; use one of ['forget', 'retain'] (or None for all)
    """
    options = list(options)
    if value is not None and value not in options:
        raise ValueError(f"unknown {name} {value!r}; use one of {options} (or None for all)")
    return value


def replaced(settings: Any, what: str, changes: dict[str, Any]) -> Any:
    """A copy of the settings dataclass with `changes`; an unknown name is refused, listing the
    known ones (`what` names the settings in the message).

    Examples:
        >>> import causal_unlearn as cu
        >>> replaced(cu.UnlearnConfig(), "unlearning", {"lr": 1e-3}).lr
        0.001
        >>> replaced(cu.UnlearnConfig(), "unlearning", {"learning_rate": 1e-3})
        Traceback (most recent call last):
        ...
        TypeError: unknown unlearning setting(s) ['learning_rate']; UnlearnConfig has ['epochs', 'lr', 'batch_size', 'grad_accum', 'eval_every', 'select', 'weight_decay', 'max_grad_norm', 'loss_on', 'max_length', 'mixed_precision', 'gradient_checkpointing', 'seed']
    """
    names = [f.name for f in dataclasses.fields(settings)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise TypeError(f"unknown {what} setting(s) {unknown}; {type(settings).__name__} has {names}")
    return dataclasses.replace(settings, **changes)
