"""How a spec's settings are declared and checked: :func:`option` (a dataclass field with help text, which the
studio shows as its tooltip, and a sane upper bound), the generic type/finiteness/range check every user-given
value goes through (:func:`check_value`), the helpers each settings class's ``__post_init__`` uses, and
:func:`build` (a settings class from a mapping, naming unknown keys). Stdlib only."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import field
from typing import Any

from engine.contract.errors import SpecError, echo, shorten

# Numbers no setting needs to exceed (exactly representable in a double, fits torch's int64 and SQLite).
DEFAULT_HIGH = 2 ** 53
SEED_HIGH = 2 ** 32 - 1  # numpy's seeds stop here
TOKENS_HIGH = 1 << 20  # a million tokens: longer than any context window
STEPS_HIGH = 10 ** 8


def option(default: Any = dataclasses.MISSING, help: str = "", *, high: float | None = None, hint: str = "",
           **kwargs: Any) -> Any:
    """A dataclass field with help text; mutable defaults are given as ``default_factory``. ``high`` is the
    largest sane value of a numeric field (``hint`` says why, in the refusal); every numeric field, bounded or
    not, is checked finite by :func:`check_value` when a spec is built from user data."""
    if default is not dataclasses.MISSING and isinstance(default, (list, dict)):
        value = default
        kwargs["default_factory"] = lambda: type(value)(value)
        default = dataclasses.MISSING
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    return field(metadata={"help": help, "high": high, "hint": hint}, **kwargs)


def field_help(cls: type, name: str) -> str:
    """The help text of a spec field (the studio shows it as a tooltip)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def default_of(cls: type, name: str) -> Any:
    """The default value of a spec field (a fresh copy for lists and mappings): the one home of every default,
    read by the studio's forms and the command line's options instead of writing it again."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def fail(where: str, message: str) -> None:
    """Refuse a value: ``where`` (which may hold a user's stage name) is cut like every echoed value."""
    raise SpecError(f"{shorten(where, 80)}: {message}")


_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "dict": dict}
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text", list: "a list",
               dict: "a mapping"}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def declared_types(annotation: Any) -> tuple[type, ...]:
    """The plain types a field's annotation allows ("int", "str | None", "list[str]" → int / str / list); ()
    for nested specs and anything else the generic check leaves to the class."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = [p.strip().split("[", 1)[0] for p in text.split("|")]
    if any(p not in _TYPES and p != "None" for p in parts):
        return ()
    return tuple(_TYPES[p] for p in parts if p in _TYPES)


def check_value(where: str, f: dataclasses.Field, value: Any) -> Any:
    """Check (and lightly coerce) one user-given value against its field's declared type: every setting goes
    through here, so a field added later is type- and finiteness-checked without code of its own. Numbers
    written as text ("1e-3", which YAML 1.1 reads as a string) become numbers; NaN, infinities and values
    above the field's ``high`` are refused."""
    types = declared_types(f.type)
    if not types or (value is None and "None" in str(f.type)):
        return value
    numeric = [t for t in types if t in (int, float)]
    if numeric and str not in types and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if numeric and isinstance(value, float) and not math.isfinite(value):
        fail(where, f"must be a finite number, got {value}.")
    if int in types and float not in types and isinstance(value, float) and value.is_integer():
        value = int(value)  # 1e3 or 1000.0 for a step count
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            fail(where, f"{_magnitude(value)} is too large.")
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        fail(where, f"expected {' or '.join(_TYPE_WORDS[t] for t in types)}, got {shown}"
                     f"{' (put text in quotes)' if str in types else ''}.")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        high = f.metadata.get("high") or DEFAULT_HIGH
        if value > high or value < -DEFAULT_HIGH:
            hint = f.metadata.get("hint")
            fail(where, f"{_magnitude(value)} is too large (at most {high:g}){'; ' + hint if hint else ''}.")
    return value


def _magnitude(value: float) -> str:
    """A number short enough for a sentence; an int too large for a float has no '%g' (OverflowError)."""
    try:
        return f"{value:g}"
    except OverflowError:
        return f"a {int(int(value).bit_length() * 0.30103) + 1}-digit number"  # str() of it may be refused too


def check_numbers(spec: Any, prefix: str) -> None:
    """The generic check of every numeric field of a spec object (also when it was built in code)."""
    for f in dataclasses.fields(spec):
        if any(t in (int, float) for t in declared_types(f.type)):
            setattr(spec, f.name, check_value(f"{prefix}.{f.name}" if prefix else f.name, f, getattr(spec, f.name)))


def nested(cls: type, value: Any, where: str) -> Any:
    """A nested settings group: built from a mapping, kept if already built, refused otherwise."""
    if isinstance(value, cls):
        return value
    return build(cls, value, where)  # SpecError "expected a mapping" for anything but a dict


def check_choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(where, f"{echo(value)} is not one of {', '.join(choices)}.")


def check_finite(where: str, value: Any) -> None:
    """A real, finite number (NaN compares false with everything, so it would pass any range check)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        fail(where, f"expected a number, got {echo(value)}.")
    if not math.isfinite(value):
        fail(where, f"must be a finite number, got {value}.")


def check_positive(where: str, value: float, *, allow_zero: bool = False, high: float | None = None) -> None:
    check_finite(where, value)
    if value < 0 or (value == 0 and not allow_zero):
        fail(where, f"must be {'≥ 0' if allow_zero else '> 0'}, got {value}.")
    if high is not None and value > high:
        fail(where, f"must be ≤ {high:g}, got {value:g}.")


def check_fraction(where: str, value: float, *, open_low: bool = False, open_high: bool = False) -> None:
    check_finite(where, value)
    low_bad = value <= 0 if open_low else value < 0
    high_bad = value >= 1 if open_high else value > 1
    if low_bad or high_bad:
        lo, hi = ("(0" if open_low else "[0"), ("1)" if open_high else "1]")
        fail(where, f"must lie in {lo}, {hi}, got {value}.")


def build(cls: type, values: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, naming unknown keys instead of failing with a TypeError."""
    where = where or cls.__name__
    if not isinstance(values, dict):
        raise SpecError(f"{where}: expected a mapping of settings, got {type(values).__name__}.")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for f in dataclasses.fields(cls):  # a fixed field (a stage class's kind) may be written, as what it is
        if not f.init and f.name in values:
            if values[f.name] != f.default:
                raise SpecError(f"{where}.{f.name}: is {f.default!r} for {cls.__name__}, got {values[f.name]!r}.")
            values = {k: v for k, v in values.items() if k != f.name}
    unknown = sorted(str(k) for k in set(values) - names)
    if unknown:
        raise SpecError(f"{shorten(where, 80)}: unknown setting {echo(unknown[0])}; known settings are "
                        f"{', '.join(sorted(names))}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {k: check_value(f"{where}.{k}" if where != "spec" else k, fields[k], v) for k, v in values.items()}
    try:
        return cls(**values)
    except (TypeError, AttributeError) as exc:  # wrong value types deep in a constructor
        raise SpecError(f"{where}: a setting has the wrong type ({exc}); check the spec against the documented "
                        "settings.") from None


def to_dict(spec: Any) -> dict:
    """Plain-data form of a spec, ready for YAML or JSON."""
    return dataclasses.asdict(spec)


def changed_only(spec: Any, base: Any = None) -> dict:
    """Plain-data form of a spec without the settings that hold their defaults (a block of nothing but defaults
    is left out whole), so that a dumped spec is about the size of what was written; building the result gives
    ``spec`` back. ``base`` is the default to compare against (the field's default for a nested block; else the
    class built with no arguments, or its fields' defaults). A class's ``ALWAYS_WRITTEN`` fields are kept."""
    if base is None:
        try:
            base = type(spec)()
        except (SpecError, TypeError):  # a class with no valid default (a run needs stages): its fields' defaults
            base = None
    keep = getattr(type(spec), "ALWAYS_WRITTEN", ())
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        default = getattr(base, f.name) if base is not None else _field_default(f)
        if dataclasses.is_dataclass(value):
            plain = changed_only(value, default if type(default) is type(value) else None)
            if plain or f.name in keep:
                out[f.name] = plain
        elif isinstance(value, list) and any(dataclasses.is_dataclass(v) for v in value):
            if f.name in keep or _plain(value) != _plain(default):
                out[f.name] = [changed_only(v) if hasattr(type(v), "ALWAYS_WRITTEN") else _plain(v) for v in value]
        elif f.name in keep or _plain(value) != _plain(default):
            out[f.name] = _plain(value)
    return out


def _field_default(f: dataclasses.Field) -> Any:
    return f.default if f.default_factory is dataclasses.MISSING else f.default_factory()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def updated(spec: Any, values: dict, where: str = "") -> Any:
    """A new ``spec`` of the same class with ``values`` (top-level settings, nested ones as mappings) in place of
    its own, validated by :func:`build`; ``spec`` itself is left as it was. The wizard's pages keep the settings
    of an opened spec that they do not show this way."""
    return build(type(spec), {**to_dict(spec), **values}, where or type(spec).__name__)
