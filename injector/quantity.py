"""Kubernetes resource quantities (``500m``, ``1``, ``64Mi``, ``1e3``) as exact numbers.

Pure. The API server rewrites quantities into a canonical form (``0.5`` becomes
``500m``, ``1024Mi`` stays, ``1Gi`` is not ``1024Mi`` textually), so the injector
never compares them as text: the Guaranteed QoS check and the recognition of an
injected container both compare the numbers.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_FORM = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<exp>[eE][+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$"
)


def parse(value: object) -> Fraction | None:
    """The quantity's value; None when it is not a quantity."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(value).limit_denominator(10**9)
    if not isinstance(value, str):
        return None
    match = _FORM.match(value.strip())
    if match is None:
        return None
    number = Fraction(match["number"])
    if match["exp"]:
        exponent = int(match["exp"][1:])
        if abs(exponent) > 30:
            return None
        return number * Fraction(10) ** exponent
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * Fraction(1024) ** _BINARY[suffix]
    scale: Fraction = Fraction(10) ** _DECIMAL[suffix]
    return number * scale


def canonical(value: object) -> object:
    """A comparable form: the exact number as text, or the value itself if not a quantity."""
    number = parse(value)
    return value if number is None else str(number)


def equal(a: object, b: object) -> bool:
    """Whether two quantities are the same amount (both must parse)."""
    x, y = parse(a), parse(b)
    return x is not None and x == y
