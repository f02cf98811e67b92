"""Changes to sources, services and routes, made on the config file's own YAML.

A change is applied to the file's raw document (not to the typed Config), so that
everything else in the file stays as written; the result is validated whole with
``parse_config`` (errors name the key path), and only a valid result is written back
(atomically: a temporary file in the same directory, fsync, rename) and applied.

The file is written back with ruamel.yaml's round-trip mode: the same change is made on the
document as ruamel read it, so the user's comments, key order and layout stay (PyYAML, which
validates, does not read comments). A file that cannot be written (read-only mode bits, as a
ConfigMap mount has, or a read-only file system) is a 409 naming the file, before anything
is applied.
"""
from __future__ import annotations

import copy
import errno
import io
import os
import tempfile

import yaml

from gateway.admin.http import HttpProblem
from gateway.config import DEFAULT_NAMESPACE

SECTIONS = ("sources", "services", "routes")


def identity(section: str, item) -> str | None:
    """How an entry is named in URLs: sources and routes by name, services by "ns/name"."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    if section == "services":
        return f"{item.get('namespace') or DEFAULT_NAMESPACE}/{item['name']}"
    return item["name"]


def _entries(data: dict, section: str) -> list:
    entries = data.get(section)
    if entries is None:
        entries = data[section] = []
    if not isinstance(entries, list):
        raise HttpProblem(400, "invalid change: nothing applied",
                          errors=[f"{section}: must be a list in the config file"])
    return entries


def _find(entries: list, section: str, ident: str) -> int:
    for i, entry in enumerate(entries):
        if identity(section, entry) == ident:
            return i
    raise HttpProblem(404, f"no {section[:-1]} {ident!r} in the config")


def edit(data: dict, section: str, op: str, ident: str | None = None, item=None,
         at: int | None = None) -> dict:
    """A copy of the raw document with one entry added, replaced or removed.

    ``op``: "add" (409 if the name exists; ``at`` inserts at that index, default last),
    "replace" (404 if missing; the name comes from the URL when the body has none),
    "remove" (404 if missing).
    """
    data = copy.deepcopy(data)
    entries = _entries(data, section)
    if op in ("add", "replace") and not isinstance(item, dict):
        raise HttpProblem(400, f"the body must be a JSON object (one {section[:-1]})")
    if op == "add":
        name = identity(section, item)
        if name is not None and any(identity(section, e) == name for e in entries):
            raise HttpProblem(409, f"{section[:-1]} {name!r} already exists (PUT replaces it)")
        entries.insert(len(entries) if at is None else max(0, min(at, len(entries))), item)
    elif op == "replace":
        i = _find(entries, section, ident)
        item = dict(item)
        if section == "services" and "name" not in item:
            ns, _, name = ident.partition("/")
            item = {"name": name, "namespace": ns, **item}
        elif "name" not in item:
            item = {"name": ident, **item}
        if identity(section, item) != ident:
            raise HttpProblem(400, f"the body names {identity(section, item)!r}, the URL {ident!r}")
        entries[i] = item
    elif op == "remove":
        del entries[_find(entries, section, ident)]
    else:   # pragma: no cover - the server only passes the three above
        raise ValueError(op)
    return data


def read_raw(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise HttpProblem(500, f"cannot read the config file {path}: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise HttpProblem(500, f"the config file {path} is not a mapping")
    return data


def _round_trip():
    from ruamel.yaml import YAML
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096                     # never re-wrap the user's long lines
    return rt


def edited_text(path: str, section: str, op: str, ident: str | None = None, item=None,
                at: int | None = None) -> str:
    """The file's text with the change made on its round-trip document (comments kept)."""
    rt = _round_trip()
    try:
        with open(path, "rb") as f:
            document = rt.load(f)
    except OSError as exc:
        raise HttpProblem(500, f"cannot read the config file {path}: {exc.strerror or exc}") from None
    if document is None:
        from ruamel.yaml.comments import CommentedMap
        document = CommentedMap()
    changed = edit(document, section, op, ident, item, at)
    out = io.StringIO()
    rt.dump(changed, out)
    return out.getvalue()


def check_writable(path: str) -> None:
    """409 when the file must not or cannot be written: nothing is applied then."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise HttpProblem(409, f"the config file {path} cannot be written: {exc.strerror}") from None
    if not mode & 0o222:
        raise HttpProblem(409, f"the config file {path} is read-only (mode {mode & 0o777:o}): nothing "
                               f"changed. A config mounted from a ConfigMap is changed by changing the "
                               f"ConfigMap; with gateway_api.console_gateway set, routes are written "
                               f"as HTTPRoutes instead")


def write_atomic(path: str, data: dict | str) -> None:
    """Replace ``path`` with ``data`` (a document, or the text to write); a reader sees the
    old file or the new one. A file system that refuses the write is a 409 naming the file."""
    try:
        _write_atomic(path, data)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
            raise HttpProblem(409, f"the config file {path} cannot be written: {exc.strerror}; "
                                   f"nothing changed") from None
        raise


def _write_atomic(path: str, data: dict | str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False, default_flow_style=False,
                                                             allow_unicode=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=".gateway-", suffix=".yaml", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself is durable only once the directory is synced.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
