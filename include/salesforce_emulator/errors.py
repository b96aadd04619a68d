"""Salesforce error shapes.

One exception type carries everything a response needs. The REST envelope, the per-record
collection shape and the Bulk ``sf__Error`` column are three renderings of the same error.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error Salesforce would answer with.

    ``status`` is the HTTP status a single-record call returns; collections, composite and bulk
    report the same error inside a 200 (see ``as_record_error``).
    """

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None,
                 *, extra: dict | None = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.extra = extra or {}

    def as_rest(self) -> list[dict]:
        body = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            body["fields"] = self.fields
        body.update(self.extra)
        return [body]

    def as_record_error(self) -> dict:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields or []}

    def as_bulk_error(self) -> str:
        return f"{self.code}:{self.message}:{','.join(self.fields or [])} --"


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def invalid_session() -> ApiError:
    return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")


def request_limit_exceeded() -> ApiError:
    return ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")


def malformed_query(message: str) -> ApiError:
    return ApiError(400, "MALFORMED_QUERY", message)


def json_parser_error(detail: str) -> ApiError:
    return ApiError(400, "JSON_PARSER_ERROR", detail)
