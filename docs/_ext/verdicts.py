"""How a claim's verdict is computed from its figures, in one place.

A claim states a quantity: a range ("5-20x"), a value ("about 1 µs") or a
bound ("slower": more than 1x). Each figure measured for it is judged
against that statement, and the figures together give one verdict:

- **Confirmed** when every figure is within the claim;
- **Not confirmed** when every figure is outside it, on the same side;
- **Depends** otherwise, naming the figures furthest below and above.

A figure outside the claim is "N x below" or "N x above" it: for a range or
a bound, N is measured from the nearest end; for "about X", from X itself,
and "about" allows a factor of :data:`ABOUT` either way. N is written with 2
significant digits, and a figure whose N would read 1 counts as within the
claim: a verdict never says "1x".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

#: How far from X a figure may be for a claim of "about X" to hold.
ABOUT = 2.0


def times(x: float) -> str:
    """A ratio with 2 significant digits (all of them from 100 on): 0.58x, 1.0x, 9.1x, 206x."""
    digits = f"{x:.2g}"
    if x >= 10 or float(digits) >= 10:
        return f"{x:.0f}x"
    # .2g drops a trailing zero: 7 and 1 are written 7.0 and 1.0, 2 digits.
    return f"{float(digits):.1f}x" if "." not in digits and "e" not in digits else f"{digits}x"


def reads_as_one(factor: float) -> bool:
    """Whether ``factor`` (1 or more) would be written as 1.0x."""
    return times(factor) == "1.0x"


class Figure(NamedTuple):
    """One measured figure for a claim."""

    #: The primitive whose stored run (or page) it belongs to; "" for none.
    primitive: str
    #: Where it comes from: a stored run and its benchmark groups, a test, a document.
    source: str
    #: A few words naming it in a verdict: "`CtypesMetrics` update".
    label: str
    #: The figure as the tables show it (markdown).
    shown: str
    #: The quantity judged against the claim; NaN for a fact.
    value: float = math.nan


@dataclass(frozen=True)
class Claimed:
    """The quantity a claim states: ``low`` to ``high``, or ``about`` a value."""

    low: float = 0.0
    high: float = math.inf
    about: float | None = None

    @classmethod
    def near(cls, value: float) -> Claimed:
        """'About ``value``': within a factor of ABOUT either way."""
        return cls(value / ABOUT, value * ABOUT, value)

    def judge(self, value: float) -> tuple[str, float]:
        """("below" | "within" | "above", factor), the factor 1 within the claim."""
        if value <= 0:
            factor = math.inf  # nothing is a factor away from none
        elif self.about is not None:
            factor = max(value / self.about, self.about / value)
        elif value < self.low:
            factor = self.low / value
        else:
            factor = value / self.high
        if self.low <= value <= self.high or reads_as_one(factor):
            return "within", 1.0
        return ("below" if value < self.low else "above"), factor


def verdict(claimed: Claimed, figures: Sequence[Figure]) -> str:
    """The one verdict of a claim over all its figures (see the module docstring)."""
    if not figures:
        raise ValueError("a verdict needs at least one figure")
    judged = [(f, *claimed.judge(f.value)) for f in figures]
    within = [f for f, side, _ in judged if side == "within"]
    below = sorted(((k, f.label) for f, side, k in judged if side == "below"), reverse=True)
    above = sorted(((k, f.label) for f, side, k in judged if side == "above"), reverse=True)
    n = len(figures)
    if not below and not above:
        return "**Confirmed**: " + _within(claimed, figures)
    if not within and not (below and above):
        side, outside = ("below", below) if below else ("above", above)
        most, least = outside[0][0], outside[-1][0]
        span = times(most) if times(most) == times(least) else f"{times(least)} to {times(most)}"
        return f"**Not confirmed**: {span} {side} the claim"
    parts = [f"within the claim for {len(within)} of {n} figures"] if within else []
    for side, outside in (("below", below), ("above", above)):
        if outside:
            factor, label = outside[0]
            reach = "up to " if len(outside) > 1 else ""
            parts.append(f"{reach}{times(factor)} {side} it for {label}")
    return "**Depends**: " + "; ".join(parts)


def _within(claimed: Claimed, figures: Sequence[Figure]) -> str:
    if claimed.about is None:
        n = len(figures)
        return "within the claim" + {1: "", 2: " for both figures"}.get(n, f" for all {n} figures")
    deviation = max(max(f.value / claimed.about, claimed.about / f.value) for f in figures)
    if reads_as_one(deviation):
        return "as claimed"
    return (
        f"at most {times(deviation)} from the claimed value, within the factor of "
        f'{ABOUT:g} an "about" allows'
    )


#: A verdict that is not computed from figures against a Claimed quantity.
Judge = Callable[[Sequence[Figure]], str]
