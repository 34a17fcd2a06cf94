"""Hyper-parameter rules: what values each keyword argument of a head, loss or backbone may take.

A class declares the valid values of its keyword arguments next to its definition, in the class
attribute ``PARAMS`` (argument name -> :class:`Real`, :class:`Integer`, :class:`Flag`,
:class:`Choice` or :class:`Check`), and subclasses :class:`CheckedParams`. Its constructor then
checks (and normalises: an int given for a real parameter becomes a float) the declared arguments
before it runs, and :func:`validate_params` runs the very same checks on a plain ``dict`` without
building anything. A failed check raises ``ValueError("<name>: <param>=<value> ...")`` naming the
valid range. :func:`accepted_arguments` lists the keyword arguments a constructor binds.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

# ------------------------------------------------------------------------------------------------
# hyper-parameter specifications
# ------------------------------------------------------------------------------------------------


def _num(v: float) -> str:
    """A bound as it appears in a message: ``0``, ``1.5708``, ``1e-05``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return repr(v)
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{float(v):.6g}"


class Depends:
    """A bound that depends on the value of a choice parameter, e.g. an upper margin of
    ``π/2`` for an angular variant and ``1`` for a cosine one::

        Real(lo=0, hi=Depends("additive", {"arc": math.pi / 2, "cos": 1.0}), hi_open=True)
    """

    def __init__(self, param: str, table: Mapping[Any, float]):
        self.param, self.table = param, dict(table)

    def resolve(self, values: Mapping[str, Any]) -> Optional[Tuple[float, str]]:
        key = values.get(self.param)
        if key not in self.table:
            return None
        return float(self.table[key]), f"{_num(self.table[key])} (for {self.param}={key!r})"

    def text(self) -> str:
        return " or ".join(f"{_num(v)} (for {self.param}={k!r})" for k, v in self.table.items())


#: a bound: a number, the name of another parameter of the same constructor, or a :class:`Depends`
Bound = Union[None, float, str, Depends]


def _resolve(bound: Bound, values: Optional[Mapping[str, Any]]) -> Optional[Tuple[float, str]]:
    """``(value, text)`` of a bound, or None when it cannot be resolved (no value to compare with)."""
    if bound is None:
        return None
    if isinstance(bound, Depends):
        return None if values is None else bound.resolve(values)
    if isinstance(bound, str):
        other = None if values is None else values.get(bound)
        if isinstance(other, bool) or not isinstance(other, numbers.Real):
            return None
        return float(other), f"{bound} (={_num(other)})"
    return float(bound), _num(bound)


def _bound_text(bound: Bound) -> str:
    if isinstance(bound, Depends):
        return bound.text()
    return bound if isinstance(bound, str) else _num(bound)


class Param:
    """What one keyword argument may be. ``doc`` says what the value means (it ends every
    message); ``optional`` also admits ``None`` (meaning "the documented default rule")."""

    def __init__(self, doc: str = "", optional: bool = False):
        self.doc, self.optional = doc, bool(optional)

    # -- to override ---------------------------------------------------------------------------
    def convert(self, value):
        """The value as it will be used; raise ``_Invalid(problem)`` when its type is wrong."""
        return value

    def check_range(self, name: str, value, values: Mapping[str, Any]) -> Optional[str]:
        """The resolved range text when ``value`` lies outside it (None when it is fine)."""
        return None

    def expectation(self, name: str, values: Optional[Mapping[str, Any]] = None) -> str:
        """The valid values, as in ``0 <= m < 1.5708``."""
        return "any value"

    # -- shared --------------------------------------------------------------------------------
    def describe(self, name: str, values: Optional[Mapping[str, Any]] = None) -> str:
        text = self.expectation(name, values)
        if self.optional:
            text += " or None"
        return f"{text} ({self.doc})" if self.doc else text

    def validate_type(self, who: str, name: str, value):
        """``value`` converted, or ``ValueError("<who>: <name>=<value> is not ...")``."""
        if value is None and self.optional:
            return None
        try:
            return self.convert(value)
        except _Invalid as e:
            raise ValueError(f"{who}: {name}={value!r} {e.args[0]}: expected {self.describe(name)}") from None

    def validate_range(self, who: str, name: str, value, values: Mapping[str, Any]) -> None:
        """Raise ``ValueError("<who>: <name>=<value> is out of range ...")`` unless the converted
        ``value`` lies in range (``values``: the other converted arguments, for relations)."""
        if value is None and self.optional:
            return
        expected = self.check_range(name, value, values)
        if expected is not None:
            raise ValueError(f"{who}: {name}={value!r} is out of range: expected {expected}"
                             + (f" ({self.doc})" if self.doc else ""))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe('value')!r})"


class _Invalid(Exception):
    """A value of the wrong type (internal: becomes a ``ValueError`` naming the parameter)."""


class _Interval(Param):
    """A number in an interval whose ends may be open, closed or absent."""

    def __init__(self, lo: Bound = None, hi: Bound = None, *, lo_open: bool = False, hi_open: bool = False,
                 doc: str = "", optional: bool = False):
        super().__init__(doc, optional)
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, bool(lo_open), bool(hi_open)

    def _text(self, name: str, lo: Optional[str], hi: Optional[str]) -> str:
        lo_op = "<" if self.lo_open else "<="
        hi_op = "<" if self.hi_open else "<="
        if lo is not None and hi is not None:
            return f"{lo} {lo_op} {name} {hi_op} {hi}"
        if lo is not None:
            return f"{name} {'>' if self.lo_open else '>='} {lo}"
        if hi is not None:
            return f"{name} {hi_op} {hi}"
        return f"a finite {name}"

    def expectation(self, name, values=None):
        def text(bound):
            if bound is None:
                return None
            r = _resolve(bound, values) if values is not None else None
            return r[1] if r is not None else _bound_text(bound)
        return self._text(name, text(self.lo), text(self.hi))

    def check_range(self, name, value, values):
        lo, hi = _resolve(self.lo, values), _resolve(self.hi, values)
        ok = True
        if lo is not None:
            ok &= value > lo[0] if self.lo_open else value >= lo[0]
        if hi is not None:
            ok &= value < hi[0] if self.hi_open else value <= hi[0]
        if ok:
            return None
        return self._text(name, lo[1] if lo else None, hi[1] if hi else None)


class Real(_Interval):
    """A finite real number, optionally within bounds (ints are accepted and become floats;
    text, booleans, NaN and infinities are not)."""

    def convert(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _Invalid("is not a number")
        v = float(value)
        if not math.isfinite(v):
            raise _Invalid("is not a finite number")
        return v


class Integer(_Interval):
    """An integer, optionally within bounds (a float with an integral value such as ``4.0``
    is accepted and becomes ``4``; ``2.5``, text and booleans are not)."""

    def convert(self, value):
        if isinstance(value, bool):
            raise _Invalid("is not an integer")
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
            return int(value)
        raise _Invalid("is not an integer")

    def expectation(self, name, values=None):
        return "an integer " + super().expectation(name, values) if (self.lo, self.hi) != (None, None) \
            else "an integer"


class Flag(Param):
    """``True`` or ``False`` (not ``1``, ``"false"`` or ``None``)."""

    def convert(self, value):
        if isinstance(value, bool):
            return value
        if type(value).__name__ == "bool_":  # numpy.bool_
            return bool(value)
        raise _Invalid("is not true or false")

    def expectation(self, name, values=None):
        return "true or false"


class Choice(Param):
    """One of a fixed set of values (compared with ``==``)."""

    def __init__(self, *choices, doc: str = "", optional: bool = False):
        super().__init__(doc, optional)
        self.choices = tuple(choices)

    def convert(self, value):
        try:
            if value in self.choices:
                return value
        except TypeError:  # an unhashable or otherwise incomparable value
            pass
        raise _Invalid("is not allowed" if len(self.choices) == 1 else "is not one of the choices")

    def expectation(self, name, values=None):
        if len(self.choices) == 1:
            return repr(self.choices[0])
        return "one of " + ", ".join(map(repr, self.choices))


class Check(Param):
    """A custom rule: ``fn(value)`` returns the value to use or raises ``ValueError(reason)``;
    ``text`` describes the valid values."""

    def __init__(self, fn: Callable[[Any], Any], text: str, doc: str = "", optional: bool = False):
        super().__init__(doc, optional)
        self.fn, self.text = fn, text

    def convert(self, value):
        try:
            return self.fn(value)
        except (TypeError, ValueError) as e:
            raise _Invalid(f"is not valid ({e})") from None

    def expectation(self, name, values=None):
        return self.text


def validate_params(who: str, specs: Mapping[str, Param], values: Mapping[str, Any],
                    given: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """Check every value of ``values`` that ``specs`` describes and return all of ``values``
    with those converted (ints to floats for :class:`Real`, ...). Types are checked first, then
    ranges, so that a range that refers to another parameter compares with its converted value.
    The ranges of the ``given`` names (those the caller set, as opposed to defaults) are checked
    first, so that a broken relation is reported on the value the caller set.
    Raises ``ValueError("<who>: <name>=<value> ...")`` naming the valid values."""
    out = dict(values)
    for name, spec in specs.items():
        if name in out:
            out[name] = spec.validate_type(who, name, out[name])
    first = [n for n in (given or ()) if n in specs and n in out]
    for name in first + [n for n in specs if n in out and n not in first]:
        specs[name].validate_range(who, name, out[name], out)
    return out


def param_specs(ctor: Callable) -> Dict[str, Param]:
    """The :class:`Param` of every hyper-parameter ``ctor`` declares (``PARAMS`` of a class
    and of its bases, the most derived declaration winning)."""
    if isinstance(ctor, type):
        out: Dict[str, Param] = {}
        for c in reversed(ctor.__mro__):
            out.update(vars(c).get("PARAMS", {}))
        return out
    return dict(getattr(ctor, "PARAMS", {}))


def display_name(ctor: Callable) -> str:
    """The name messages use: the registered name of a class (not of its base), else its own."""
    own = vars(ctor).get("registered_name") if isinstance(ctor, type) else getattr(ctor, "registered_name", None)
    return own or getattr(ctor, "__name__", type(ctor).__name__)


def default_arguments(ctor: Callable) -> Dict[str, Any]:
    """The default of every keyword argument ``ctor`` accepts, following ``**kw`` up a class's bases."""
    out: Dict[str, Any] = {}
    targets = [c.__init__ for c in inspect.getmro(ctor) if "__init__" in vars(c)] if isinstance(ctor, type) else [ctor]
    for fn in targets:
        if fn is object.__init__:
            break
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            break
        for p in params:
            if p.name != "self" and p.default is not p.empty and p.name not in out:
                out[p.name] = p.default
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return out


def _checked_init(init: Callable) -> Callable:
    sig = inspect.signature(init)
    var_kw = next((p.name for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD), None)

    @functools.wraps(init)
    def __init__(self, *args, **kw):
        cls = type(self)
        if cls.__init__ is not __init__:  # a base's constructor called by super(): checked already
            return init(self, *args, **kw)
        try:
            bound = sig.bind(self, *args, **kw)
        except TypeError:
            return init(self, *args, **kw)  # Python's own message for a wrong call
        extra = dict(bound.arguments.get(var_kw) or {}) if var_kw else {}
        given = [n for n in list(bound.arguments)[1:] if n != var_kw] + list(extra)
        bound.apply_defaults()
        names = [n for n in list(bound.arguments)[1:] if n != var_kw]
        values = {n: bound.arguments[n] for n in names}
        checked = validate_params(display_name(cls), param_specs(cls), {**extra, **values}, given)
        for n in names:
            bound.arguments[n] = checked[n]
        if var_kw:
            bound.arguments[var_kw] = {k: checked[k] for k in extra}
        return init(*bound.args, **bound.kwargs)

    __init__.__checked__ = True
    return __init__


class CheckedParams:
    """Mixin: the constructor checks the hyper-parameters declared in ``PARAMS``.

    ``PARAMS`` maps an argument name to its :class:`Param`; the declarations of the bases are
    inherited (a subclass may narrow one by declaring it again). When an instance is built, the
    constructor of its own class binds the call, checks and converts every declared argument
    (explicit, defaulted or passed on through ``**kw``) with :func:`validate_params`, and then
    runs with the converted values. Constructors of bases called through ``super()`` do not check
    again. Messages start with the class's registered name.
    """

    PARAMS: Dict[str, Param] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        init = vars(cls).get("__init__")
        if init is not None and not getattr(init, "__checked__", False):
            cls.__init__ = _checked_init(init)


# ------------------------------------------------------------------------------------------------
# the registry
# ------------------------------------------------------------------------------------------------


def accepted_arguments(ctor: Callable) -> Optional[List[str]]:
    """The keyword arguments ``ctor`` accepts, following ``**kw`` up a class's bases
    (``None`` when some callable in the chain takes arbitrary keywords we cannot list)."""
    own = getattr(ctor, "accepted_arguments", None)
    if callable(own):  # a class that knows which of its bases' options it passes through
        return list(own())
    names: List[str] = []
    targets = [c.__init__ for c in inspect.getmro(ctor) if "__init__" in vars(c)] if isinstance(ctor, type) else [ctor]
    for fn in targets:
        if fn is object.__init__:
            break
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return None
        more = False
        for p in params:
            if p.name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                more = True
            elif p.name not in names:
                names.append(p.name)
        if not more:
            return names
    return None if not isinstance(ctor, type) else names
