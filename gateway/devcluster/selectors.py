"""Label and field selectors, parsed the way the API server parses ``labelSelector`` / ``fieldSelector``.

Label selector grammar (k8s.io/apimachinery/pkg/labels): comma-separated requirements, all of
which must hold: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``,
``k>3``, ``k<3``. ``k!=v`` and ``notin`` also match objects without the label.

Field selectors support ``=``, ``==`` and ``!=`` on the fields the resource declares
(``metadata.name`` and ``metadata.namespace`` everywhere).
"""
from __future__ import annotations

import re
from typing import Callable

Predicate = Callable[[dict], bool]


class SelectorError(ValueError):
    """The selector does not parse; the API server answers 400 BadRequest."""


def _always(_: dict) -> bool:
    return True


def _split_requirements(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


_KEY = r"[A-Za-z0-9./_-]+"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$")
_OP_RE = re.compile(rf"^({_KEY})\s*(==|!=|=|>|<)\s*(.*)$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")


def _label_requirement(text: str) -> Callable[[dict], bool]:
    if m := _SET_RE.match(text):
        key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _OP_RE.match(text):
        key, op, value = m.group(1), m.group(2), m.group(3).strip()
        if op in ("=", "=="):
            return lambda labels: labels.get(key) == value
        if op == "!=":
            return lambda labels: labels.get(key) != value
        try:
            bound = int(value)
        except ValueError:
            raise SelectorError(f"unable to parse requirement: {text!r}: value must be an integer") from None
        if op == ">":
            return lambda labels: _as_int(labels.get(key)) is not None and _as_int(labels[key]) > bound
        return lambda labels: _as_int(labels.get(key)) is not None and _as_int(labels[key]) < bound
    if m := _EXISTS_RE.match(text):
        negate, key = m.group(1) == "!", m.group(2)
        return (lambda labels: key not in labels) if negate else (lambda labels: key in labels)
    raise SelectorError(f"unable to parse requirement: {text!r}")


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_label_selector(text: str | None) -> Predicate:
    """A predicate over objects (dicts) from a ``labelSelector`` string; empty matches all."""
    if not text:
        return _always
    requirements = [_label_requirement(part) for part in _split_requirements(text)]

    def matches(obj: dict) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return matches


def _field_value(obj: dict, path: str) -> str:
    value: object = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def parse_field_selector(text: str | None, fields: frozenset[str]) -> Predicate:
    """A predicate from a ``fieldSelector`` string; only ``fields`` may be selected on."""
    if not text:
        return _always
    terms: list[tuple[str, bool, str]] = []
    for part in _split_requirements(text):
        m = re.match(r"^([A-Za-z0-9._-]+)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid selector: {part!r}; can't understand {part!r}")
        field, op, value = m.groups()
        if field not in fields:
            raise SelectorError(f'field label not supported: {field}')
        terms.append((field, op != "!=", value.strip()))

    def matches(obj: dict) -> bool:
        return all((_field_value(obj, f) == v) == equal for f, equal, v in terms)

    return matches


def single_name(text: str | None) -> str | None:
    """The name a ``metadata.name=x`` field selector pins, if it is that simple."""
    if text and (m := re.fullmatch(r"\s*metadata\.name\s*==?\s*([^,]+?)\s*", text)):
        return m.group(1)
    return None


def both(first: Predicate, second: Predicate) -> Predicate:
    if first is _always:
        return second
    if second is _always:
        return first
    return lambda obj: first(obj) and second(obj)
