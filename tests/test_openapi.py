"""The committed OpenAPI document of the JSON API is valid and matches the contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor
from openapi_spec_validator import validate

from txverify.v1 import audit_pb2, registry_pb2, usage_pb2, verification_pb2

DOCUMENT = Path(__file__).resolve().parent.parent / "proto" / "txverify" / "v1" / "openapi.json"
SERVICES = (
    verification_pb2.DESCRIPTOR.services_by_name["VerificationService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditLog"],
    registry_pb2.DESCRIPTOR.services_by_name["MemberRegistry"],
    usage_pb2.DESCRIPTOR.services_by_name["UsageService"],
)
INT64 = {
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_SINT64: "int64",
    FieldDescriptor.TYPE_SFIXED64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_FIXED64: "uint64",
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def test_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    validate(doc)
    assert "3.1.0" == doc["openapi"]


def test_one_path_per_unary_rpc_of_the_public_services_and_nothing_else(
    doc: dict[str, Any],
) -> None:
    expected = {
        f"/{service.full_name}/{method.name}": f"{service.full_name}.{method.name}"
        for service in SERVICES
        for method in service.methods
        if not (method.client_streaming or method.server_streaming)
    }
    assert expected == {path: item["post"]["operationId"] for path, item in doc["paths"].items()}
    assert all(["post"] == list(item) for item in doc["paths"].values())


def test_verify_request_fields_are_under_their_json_names(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["txverify.v1.VerifyRequest"]
    fields = verification_pb2.VerifyRequest.DESCRIPTOR.fields
    assert [f.json_name for f in fields] == list(schema["properties"])
    assert "qrText" in schema["properties"]


def test_64_bit_integers_are_strings(doc: dict[str, Any]) -> None:
    checked = 0
    for name, schema in doc["components"]["schemas"].items():
        if not name.startswith("txverify.") or "properties" not in schema:
            continue
        for field in descriptor_pool.Default().FindMessageTypeByName(name).fields:
            if field.type in INT64:
                prop = schema["properties"][field.json_name]
                prop = prop.get("items", prop)
                assert ("string", INT64[field.type]) == (prop["type"], prop["format"]), name
                checked += 1
    assert checked, "the contract has int64 fields: none was found"


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = set(_refs(doc))
    assert "#/components/schemas/connect.error" in refs
    for ref in sorted(refs):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]
