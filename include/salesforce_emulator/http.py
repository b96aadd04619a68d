"""Request/response types and the route table shared by the emulator's handlers."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

import orjson

from .errors import ApiError, json_parser_error

JSON_TYPE = "application/json;charset=UTF-8"
API_VERSION_RE = r"v(?P<v>\d{2}\.0)"
MIN_VERSION, MAX_VERSION = 31, 66


@dataclass
class Request:
    method: str
    path: str  # raw (percent-encoded) path
    query_string: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # route groups, percent-decoded
    session: dict | None = None
    internal: bool = False  # a composite sub-request
    answer_delay: float = 0.0  # a slow_answer fault: seconds the answer waits once the call ran

    @property
    def version(self) -> str:
        return self.params.get("v", "59.0")

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def json(self):
        if not self.body:
            raise json_parser_error("No content to map due to end-of-input")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise json_parser_error(f"Unexpected character: {exc}") from None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def json(self):
        return orjson.loads(self.body) if self.body else None


def json_response(status: int, payload, headers: dict | None = None) -> Response:
    return Response(status, orjson.dumps(payload), JSON_TYPE, dict(headers or {}))


def error_response(err: ApiError) -> Response:
    if err.status == 300:  # several records match an external id: a list of their URLs
        return json_response(300, err.extra.get("matches", []))
    return json_response(err.status, err.as_rest())


def no_content() -> Response:
    return Response(204)


@dataclass
class Route:
    methods: set[str]
    pattern: re.Pattern
    handler: Callable[[Request], Response]
    endpoint: str  # the key used for counters and fault injection
    kind: str  # "rest" (authenticated, counted, limit header), "login", "open", "control"


def route(methods: str, pattern: str, handler, endpoint: str, kind: str = "rest") -> Route:
    pattern = pattern.replace("{v}", API_VERSION_RE)
    return Route(set(methods.split("|")), re.compile(pattern + r"\Z"), handler, endpoint, kind)


def match(routes: list[Route], method: str, path: str) -> tuple[Route | None, dict, bool]:
    """Find the route for ``path``; the third value says whether the path matched any method."""
    path_matched = False
    for r in routes:
        m = r.pattern.match(path)
        if m:
            path_matched = True
            if method in r.methods:
                return r, {k: unquote(v) for k, v in m.groupdict().items() if v is not None}, True
    return None, {}, path_matched
