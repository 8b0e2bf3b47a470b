"""Answers and failures as JSON: one shape everywhere, the proto3 JSON mapping.

The JSON API sends it, `txverify ... --json` prints it and the console reads it:
a message is its proto3 JSON (lowerCamelCase names, int64 such as satang as
strings, enums by name, times in RFC 3339 UTC), as grpcurl and every
generated client show it; a failure is the Connect protocol's error JSON
({"code", "message", "details": [{"type", "value", "debug"}]}), whose details
are the google.rpc messages a gRPC failure carries.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format, message
from google.rpc import error_details_pb2

from txverify.errors import DOMAIN, ErrorDetails, retry_delay
from txverify.v1 import common_pb2

STATUS_NAMES = {
    common_pb2.TRANSACTION_STATUS_COMPLETED: "COMPLETED",
    common_pb2.TRANSACTION_STATUS_REVERSED: "REVERSED",
}


def message_json(msg: message.Message) -> dict[str, Any]:
    """A message as proto3 JSON (what the JSON API answers)."""
    shown: dict[str, Any] = json_format.MessageToDict(msg)
    return shown


def detail_json(detail: message.Message) -> dict[str, Any]:
    """One error detail as the Connect protocol carries it: type, bytes, and its JSON."""
    value = base64.b64encode(detail.SerializeToString()).decode().rstrip("=")
    return {"type": detail.DESCRIPTOR.full_name, "value": value, "debug": message_json(detail)}


def error_json(details: ErrorDetails) -> dict[str, Any]:
    """A failed call as Connect error JSON, with the details it carried."""
    parts: list[message.Message] = []
    if details.reason:
        parts.append(
            error_details_pb2.ErrorInfo(
                reason=details.reason, domain=DOMAIN, metadata=dict(details.metadata)
            )
        )
    if details.violations:
        parts.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in details.violations
                ]
            )
        )
    if details.retry_after is not None:
        parts.append(error_details_pb2.RetryInfo(retry_delay=retry_delay(details.retry_after)))
    code = "canceled" if details.status.name == "CANCELLED" else details.status.name.lower()
    shown: dict[str, Any] = {"code": code, "message": details.message}
    if parts:
        shown["details"] = [detail_json(p) for p in parts]
    return shown
