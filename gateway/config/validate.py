"""Checking config values: every problem reported with its key path, all of them at once.

Each parser takes (value, path, errs), appends "path: problem" to ``errs`` for a bad value
and returns the parsed value, or None when it was bad: parsing goes on, so every error is
reported, and nothing is built if there was one.  The loader uses them for the file; the
admin console (route bodies) and the Gateway API translation use the same checks
(``loader.parse_route``, ``regex_problem``), so a value is valid or not wherever it comes from.
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import MISSING, fields
from typing import Any, Callable, Iterable

from gateway.units import parse_duration, parse_size


class ConfigError(Exception):
    """The config is invalid; ``errors`` holds one ``key.path: problem`` line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# --- Reporting and typed helpers -------------------------------------------------------------
#
# Each helper takes (value, path, errs), appends "path: problem" for a bad value and returns
# the parsed value, or None when it was bad: parsing goes on so that every error is reported,
# and the Config is never built if there was one.

_Errors = list[str]
_Parser = Callable[[Any, str, _Errors], Any]

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


# An object name that is a DNS subdomain (RFC 1123), as a Lease's
_DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HOSTNAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ROUTE_HOST = re.compile(r"(\*\.)?" + _HOSTNAME.pattern)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")     # RFC 9110 section 5.6.2


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _err(errs: _Errors, path: str, problem: str) -> None:
    errs.append(f"{path}: {problem}" if path else problem)


def _show(value: Any) -> str:
    """A value as it was written in YAML, for "got ..." in messages."""
    if isinstance(value, str):
        return f'"{value}"'
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _is_off(value: Any) -> bool:
    # YAML 1.1 (PyYAML) reads a bare `off` as false.
    return value is None or value is False or value == "off"


def _keys(value: Any, path: str, errs: _Errors, allowed: Iterable[str],
          required: Iterable[str] = ()) -> dict | None:
    """A mapping with only ``allowed`` keys, ``required`` ones set; unknown keys get a hint."""
    if not isinstance(value, dict):
        _err(errs, path, f"must be a mapping, got {_show(value)}")
        return None
    allowed = list(allowed)
    for key in value:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            _err(errs, path, f'unknown key "{key}"{hint}')
    for key in required:
        if value.get(key) is None:
            _err(errs, _at(path, key), "required")
    return value


def _opt(d: dict, key: str, parse: _Parser, path: str, errs: _Errors, default: Any = None) -> Any:
    """``d[key]`` parsed; absent or null gives ``default`` (required keys are checked by _keys)."""
    value = d.get(key)
    return default if value is None else parse(value, _at(path, key), errs)


def _kwargs(d: dict, path: str, errs: _Errors, parsers: dict[str, _Parser]) -> dict[str, Any]:
    """The keys of ``d`` that are set, parsed; the dataclass supplies defaults for the rest."""
    return {key: parse(d[key], _at(path, key), errs)
            for key, parse in parsers.items() if d.get(key) is not None}


def _str(value: Any, path: str, errs: _Errors, empty: bool = False) -> str | None:
    if not isinstance(value, str):
        _err(errs, path, f"must be a string, got {_show(value)}")
        return None
    if not value and not empty:
        _err(errs, path, "must not be empty")
        return None
    return value


def _int(value: Any, path: str, errs: _Errors, lo: int, hi: int) -> int | None:
    # bool is an int in Python, but `weight: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        _err(errs, path, f"must be an integer from {lo} to {hi}")
        return None
    return value


def _bool(value: Any, path: str, errs: _Errors) -> bool | None:
    if not isinstance(value, bool):
        _err(errs, path, f"must be true or false, got {_show(value)}")
        return None
    return value


def _duration(value: Any, path: str, errs: _Errors, zero: bool = False) -> float | None:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        _err(errs, path, str(e))
        return None
    if seconds < 0 or (seconds == 0 and not zero):
        _err(errs, path, "must not be negative" if zero else "must be greater than 0")
        return None
    return seconds


def _size(value: Any, path: str, errs: _Errors) -> int | None:
    try:
        return parse_size(value)
    except ValueError as e:
        _err(errs, path, str(e))
        return None


def _list(value: Any, path: str, errs: _Errors) -> list[tuple[str, Any]]:
    """The items of a list, each with its path; [] (and an error) for anything else."""
    if not isinstance(value, list):
        _err(errs, path, f"must be a list, got {_show(value)}")
        return []
    return [(f"{path}[{i}]", item) for i, item in enumerate(value)]


def _parse_each(value: Any, path: str, errs: _Errors, parse: _Parser) -> list[tuple[str, Any]]:
    """(path, parsed) for each good item of a list; null is an empty list."""
    items = [] if value is None else _list(value, path, errs)
    return [(p, x) for p, item in items if (x := parse(item, p, errs)) is not None]


def _list_of(parse: _Parser) -> _Parser:
    """A parser of lists whose items ``parse`` parses (bad items are reported and left out)."""
    def parse_list(value: Any, path: str, errs: _Errors) -> tuple:
        return tuple(x for _, x in _parse_each(value, path, errs, parse))
    return parse_list


def _str_list(value: Any, path: str, errs: _Errors) -> list[tuple[str, str]]:
    """A string or a list of strings, each with its path."""
    items = [(path, value)] if isinstance(value, str) else _list(value, path, errs)
    return [(p, s) for p, item in items if (s := _str(item, p, errs)) is not None]


def _unique(keys: Iterable[tuple[str, Any]], what: str, errs: _Errors) -> None:
    seen = set()
    for path, key in keys:
        if key in seen:
            _err(errs, path, f'duplicate {what} "{key}"')
        seen.add(key)


def _name(value: Any, path: str, errs: _Errors) -> str | None:
    """A Kubernetes-style DNS label, so names fit in metrics, logs and URLs unquoted."""
    name = _str(value, path, errs)
    if name is not None and not _LABEL.fullmatch(name):
        _err(errs, path, f'must be a DNS label (lowercase letters, digits and "-", '
                         f'at most 63), got "{name}"')
        return None
    return name


def _token(value: Any, path: str, errs: _Errors, what: str) -> str | None:
    text = _str(value, path, errs)
    if text is not None and not _TOKEN.fullmatch(text):
        _err(errs, path, f'invalid {what} "{text}" (must be an HTTP token)')
        return None
    return text


def regex_problem(text: str) -> str | None:
    """Why ``text`` is not a regular expression the router can run, or None."""
    try:
        re.compile(text)
    except re.error as e:
        return f"invalid regex: {e}"
    return None


def ca_bundle_problem(pem: str) -> str | None:
    """Why ``pem`` is not a bundle of CA certificates a TLS context can trust, or None."""
    import ssl
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:       # ValueError: empty
        # OpenSSL's words without the "(_ssl.c:NNNN)" that locates them in CPython's source
        return f"not a PEM CA certificate bundle: {re.sub(r' [(]_ssl[.]c:[0-9]+[)]$', '', str(exc))}"
    return None


def _regex(value: Any, path: str, errs: _Errors) -> str | None:
    text = _str(value, path, errs)
    if text is None:
        return None
    problem = regex_problem(text)
    if problem:
        _err(errs, path, problem)
        return None
    return text


def _choice(value: Any, path: str, errs: _Errors, choices: tuple[str, ...]) -> str | None:
    if value not in choices:
        _err(errs, path, f"must be one of {', '.join(choices)}, got {_show(value)}")
        return None
    return value


def _number(value: Any, path: str, errs: _Errors, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        _err(errs, path, f"must be a number from {lo:g} to {hi:g}, got {_show(value)}")
        return None
    return float(value)


def _share(value: Any, path: str, errs: _Errors) -> float | None:
    """A fraction: 0.5 or "50%"."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            value = float(value[:-1]) / 100
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        _err(errs, path, f'must be a share from 0 to 1 or "0%" to "100%", got {_show(value)}')
        return None
    return float(value)


def _positive_size(value: Any, path: str, errs: _Errors) -> int | None:
    size = _size(value, path, errs)
    if size == 0:
        _err(errs, path, "must be greater than 0")
        return None
    return size


def between(lo: float, hi: float, parse: Callable = None) -> Callable:
    """A parser of integers (or, with ``parse=_number``, numbers) from ``lo`` to ``hi``."""
    parse = parse or _int
    return lambda value, path, errs: parse(value, path, errs, lo, hi)


def one_of(*choices: str) -> Callable:
    return lambda value, path, errs: _choice(value, path, errs, choices)


def section(cls: type, value: Any, path: str, errs: _Errors, required: Iterable[str] = (),
            given: dict[str, Any] | None = None) -> Any:
    """A section whose keys are the fields of ``cls`` declared with ``model.setting``: their
    file keys, parsers and defaults are the model's.  A key given badly keeps its default
    (its error is reported); a missing required key (a field without default, or named in
    ``required``) gives None.  ``given``: field name -> a value found elsewhere (a Secret's
    content rather than a file's); those fields are not keys of this section."""
    given = given or {}
    declared = {f.metadata.get("key", f.name): f for f in fields(cls) if "parse" in f.metadata and f.name not in given}
    required = [*required, *(key for key, f in declared.items()
                             if f.default is MISSING and f.default_factory is MISSING)]
    d = _keys(value, path, errs, declared, required)
    if d is None:
        return None if required else cls(**given)
    kw = {}
    for key, f in declared.items():
        if d.get(key) is not None:
            before = len(errs)
            parsed = f.metadata["parse"](d[key], _at(path, key), errs)
            if len(errs) == before:         # None may be a value (a key turned off)
                kw[f.name] = parsed
    if any(declared[key].name not in kw for key in required):
        return None
    return cls(**kw, **given)


def absolute_path(value: Any, path: str, errs: _Errors) -> str | None:
    text = _str(value, path, errs)
    if text is not None and not text.startswith("/"):
        _err(errs, path, 'must start with "/"')
        return None
    return text


def status_ranges(value: Any, path: str, errs: _Errors) -> tuple[tuple[int, int], ...] | None:
    """[200, "200-299", ...] as inclusive (low, high) ranges."""
    ranges = []
    for p, item in _list(value, path, errs):
        low = high = None
        if isinstance(item, int) and not isinstance(item, bool):
            low = high = item
        elif isinstance(item, str) and re.fullmatch(r"\d{3}-\d{3}", item):
            low, high = (int(x) for x in item.split("-"))
        if low is None or not 100 <= low <= high <= 599:
            _err(errs, p, f'must be a status code or a range like "200-299", got {_show(item)}')
        else:
            ranges.append((low, high))
    return tuple(ranges) or None


def otlp_endpoint(value: Any, path: str, errs: _Errors) -> str | None:
    text = _str(value, path, errs)
    if text is None:
        return None
    from urllib.parse import urlsplit
    url = urlsplit(text)
    if url.scheme not in ("http", "https") or not url.hostname:
        _err(errs, path, f'must be an http:// or https:// URL (OTLP/HTTP, e.g. '
                         f'"http://collector:4318/v1/traces"), got {_show(value)}')
        return None
    return text


def object_name(value: Any, path: str, errs: _Errors) -> str | None:
    """A Kubernetes object name that is a DNS subdomain (a Lease's, say)."""
    if not (isinstance(value, str) and _DNS_NAME.fullmatch(value)):
        _err(errs, path, f"must be a Kubernetes object name, got {_show(value)}")
        return None
    return value


def log_path(value: Any, path: str, errs: _Errors) -> str | None:
    """"stdout", "stderr", a file, or off (None)."""
    return None if _is_off(value) else _str(value, path, errs)


def some_text(value: Any, path: str, errs: _Errors) -> str | None:
    return _str(value, path, errs, empty=True)


def statuses_5xx(value: Any, path: str, errs: _Errors) -> tuple[int, ...] | None:
    codes = _list_of(between(500, 599))(value, path, errs)
    if codes == ():
        _err(errs, path, "must list at least one status from 500 to 599")
        return None
    return codes


_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?|\[[0-9a-f:.]+\])"
                     r"(:(?P<port>[0-9]{1,5}))?")


def cors_origins(value: Any, path: str, errs: _Errors) -> tuple[str, ...] | None:
    """CORS allowOrigins: "*", or scheme://host[:port] with an optional "*." before the host."""
    origins = []
    for p, text in _str_list(value, path, errs):
        if text != "*" and not _ORIGIN.fullmatch(text.lower()):
            _err(errs, p, f'must be "*" or an origin like "https://www.example.com" or '
                          f'"https://*.example.com", got {_show(text)}')
        else:
            origins.append(text.lower())
    return tuple(origins) if len(origins) == len(_list(value, path, [])) else None


def cors_tokens(value: Any, path: str, errs: _Errors) -> tuple[str, ...] | None:
    """Methods or header names (tokens), or "*" for any."""
    out = []
    for p, text in _str_list(value, path, errs):
        if text != "*" and not _TOKEN.fullmatch(text):
            _err(errs, p, f'must be "*" or a token (a method or header name), got {_show(text)}')
        else:
            out.append(text)
    return tuple(out) if len(out) == len(_list(value, path, [])) else None


def networks(value: Any, path: str, errs: _Errors) -> tuple[str, ...] | None:
    """IP networks ("10.0.0.0/8", "2001:db8::/32"; an address alone is one host), canonical."""
    items = _str_list(value, path, errs)
    cidrs = []
    for item_path, text in items:
        try:
            cidrs.append(str(ipaddress.ip_network(text.strip(), strict=True)))
        except ValueError as e:
            loose = _loose_network(text)
            hint = f" (did you mean {loose}?)" if loose else ""
            _err(errs, item_path, f'invalid network "{text}": {e}{hint}')
    return tuple(cidrs) if len(cidrs) == len(items) else None


def _loose_network(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        return None


def cookie_name(value: Any, path: str, errs: _Errors) -> str | None:
    """A cookie (or header) name: an HTTP token, its case kept."""
    return _token(value, path, errs, "cookie or header name")


def header_name(value: Any, path: str, errs: _Errors) -> str | None:
    """A header field name (a token), lower-cased."""
    text = _str(value, path, errs)
    if text is not None and not _TOKEN.fullmatch(text):
        _err(errs, path, f"must be a header name, got {_show(text)}")
        return None
    return text.lower() if text is not None else None


def https_url(value: Any, path: str, errs: _Errors) -> str | None:
    text = _str(value, path, errs)
    if text is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        _err(errs, path, f'must be an http(s) URL, got {_show(text)}')
        return None
    return text


def host_port(value: Any, path: str, errs: _Errors) -> tuple[str, int] | None:
    """A server to connect to: "host:port" ("[::1]:6379" for IPv6) -> (host, port)."""
    m = re.fullmatch(r"\[(?P<v6>[0-9a-fA-F:.]+)\]:(?P<p1>\d{1,5})|(?P<host>[A-Za-z0-9.-]+):(?P<p2>\d{1,5})",
                     value) if isinstance(value, str) else None
    port = int(m.group("p1") or m.group("p2")) if m else 0
    if not m or not 1 <= port <= 65535:
        _err(errs, path, f'expected "host:port", got {_show(value)}')
        return None
    return (m.group("v6") or m.group("host")).lower(), port


_RATE_KEY = re.compile(r"none|client|path|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def rate_limit_key(value: Any, path: str, errs: _Errors) -> str | None:
    """What a rate limit counts by: "none" (the route), "client", "path", "header:<name>"."""
    text = _str(value, path, errs)
    if text is not None and not _RATE_KEY.fullmatch(text):
        _err(errs, path, f'must be "none", "client", "path" or "header:<name>", got {_show(text)}')
        return None
    return text
