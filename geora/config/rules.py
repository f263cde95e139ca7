"""The valid values of one setting, and the check that names a bad one in one line.

A schema field (geora.config.sections) carries its rule as `setting(default, RULE)`;
`Section.__post_init__` checks every field, so a section is valid once it is built.

>>> check_value("train.max_steps", 200, INT_POSITIVE)
>>> check_value("train.max_steps", -3, INT_POSITIVE)
Traceback (most recent call last):
...
ValueError: train.max_steps=-3: expected an integer >= 1
>>> check_value("method.rho", 1.0, FRACTION)
Traceback (most recent call last):
...
ValueError: method.rho=1.0: expected a number in (0, 1)
>>> check_value("analysis.svd", "fast", OneOf(("auto", "exact")))
Traceback (most recent call last):
...
ValueError: analysis.svd='fast': choose one of auto, exact
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Range:
    """Valid values: integer or real, lower / upper bounds (open or closed), null or not."""
    integer: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"a number in {lo}{self.low:g}, {self.high:g}{hi}"
        elif self.low is not None:
            what = "an integer" if self.integer else "a number"
            text = f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = "an integer" if self.integer else "a number"
        return text + (" or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def refusal(self) -> str:
        return "expected " + self.describe()


@dataclass(frozen=True)
class OneOf:
    """Valid values: one of a few names (null too where nullable)."""
    choices: tuple
    nullable: bool = False

    def refusal(self) -> str:
        return "choose one of " + ", ".join(map(str, self.choices)) + \
            (" or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        return (value is None and self.nullable) or value in self.choices


@dataclass(frozen=True)
class Boolean:
    """true or false (YAML's, not a string)."""
    def refusal(self) -> str:
        return "expected true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


INT_POSITIVE = Range(integer=True, low=1)
INT_NON_NEGATIVE = Range(integer=True, low=0)
POSITIVE = Range(integer=False, low=0, low_open=True)
NON_NEGATIVE = Range(integer=False, low=0)
FRACTION = Range(integer=False, low=0, high=1, low_open=True, high_open=True)
BOOLEAN = Boolean()


def check_value(key: str, value: Any, valid: Range | OneOf | Boolean) -> None:
    """ValueError `key=value: expected ...` when `valid` refuses `value`. A setting given per
    chat mode ({thinking: ..., no_thinking: ...}, geora.models.for_chat_mode) is checked
    mode by mode."""
    if isinstance(valid, Range) and hasattr(value, "items"):
        from geora.models import CHAT_MODES, for_chat_mode

        for_chat_mode(value, False, key)   # the two modes, and nothing else
        for mode in CHAT_MODES:
            check_value(f"{key}.{mode}", value[mode], valid)
        return
    if not valid.accepts(value):
        raise ValueError(f"{key}={value!r}: {valid.refusal()}")


def setting(default: Any, valid: Range | OneOf | Boolean | None = None, *, factory=None):
    """A schema field with its default and its rule (None: only the type is checked)."""
    meta = {"valid": valid} if valid is not None else {}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)
