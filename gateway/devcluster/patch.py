"""PATCH bodies: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

Strategic merge patch is applied as a merge patch: lists are replaced, never merged by key, and
``$patch`` directives are not understood. For the objects the local cluster serves this only
matters for Service ``ports`` (merged by ``port`` on a real server).
"""
from __future__ import annotations

import copy


class PatchError(ValueError):
    """The patch cannot be applied; the API server answers 422 Invalid."""


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict, operations: list) -> dict:
    """RFC 6902 operations applied in order to a deep copy of ``target``."""
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        doc = _apply(doc, op)
    return doc


def _apply(doc: object, op: dict) -> object:
    kind, path = op["op"], _pointer(op["path"])
    if kind == "add":
        return _add(doc, path, copy.deepcopy(_value(op)))
    if kind == "remove":
        return _remove(doc, path)[0]
    if kind == "replace":
        doc, _ = _remove(doc, path)
        return _add(doc, path, copy.deepcopy(_value(op)))
    if kind == "move":
        doc, value = _remove(doc, _pointer(op.get("from", "")))
        return _add(doc, path, value)
    if kind == "copy":
        return _add(doc, path, copy.deepcopy(_get(doc, _pointer(op.get("from", "")))))
    if kind == "test":
        if _get(doc, path) != _value(op):
            raise PatchError(f"test failed at {op['path']}")
        return doc
    raise PatchError(f"unknown JSON patch op {kind!r}")


def _value(op: dict) -> object:
    if "value" not in op:
        raise PatchError(f"{op['op']} at {op['path']} needs a value")
    return op["value"]


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise PatchError(f"invalid JSON pointer {text!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/")]


def _parent(doc: object, path: list[str]) -> object:
    return _get(doc, path[:-1])


def _get(doc: object, path: list[str]) -> object:
    for part in path:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise PatchError(f"path /{'/'.join(path)} does not exist")
    return doc


def _add(doc: object, path: list[str], value: object) -> object:
    if not path:
        return value
    parent, last = _parent(doc, path), path[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else _index(last, len(parent) + 1)
        parent.insert(index, value)
    else:
        raise PatchError(f"cannot add at /{'/'.join(path)}")
    return doc


def _remove(doc: object, path: list[str]) -> tuple[object, object]:
    if not path:
        raise PatchError("cannot remove the whole document")
    parent, last = _parent(doc, path), path[-1]
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent)))
    raise PatchError(f"path /{'/'.join(path)} does not exist")


def _index(text: str, size: int) -> int:
    if not text.isdigit() or int(text) >= size:
        raise PatchError(f"array index {text!r} out of range")
    return int(text)
