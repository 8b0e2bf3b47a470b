"""Generate the OpenAPI 3.1 document of the hub's JSON API from the txverify.v1 contract.

The hub serves its public services over the Connect protocol (server/txverify/hub/jsonapi/).
protoc compiles the .proto files into descriptors with their comments, and each unary RPC
becomes POST /<package.Service>/<Method>, its messages JSON Schemas of proto3 JSON: fields
under their json_name, 64-bit integers as strings, enums by value name, Timestamp as an
RFC 3339 string, bytes as base64, maps as objects; comments become descriptions.

`python proto/generate.py` (`make proto`) calls write() after protoc; the output for
`--out proto`, txverify/v1/openapi.json, is committed and served as GET /openapi.json.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from google.protobuf import descriptor_pb2 as pb
from grpc_tools import protoc

SERVICES = (
    "txverify.v1.AuditLog",
    "txverify.v1.MemberRegistry",
    "txverify.v1.UsageService",
    "txverify.v1.VerificationService",
)
F = pb.FieldDescriptorProto
Schema = dict[str, Any]
Loc = tuple[int, ...]  # a SourceCodeInfo location path
Comments = dict[Loc, str]
T = TypeVar("T")
Located: TypeAlias = tuple[T, Comments, Loc]
Parent: TypeAlias = pb.FileDescriptorProto | pb.DescriptorProto
INT64, UINT64 = {"type": "string", "format": "int64"}, {"type": "string", "format": "uint64"}
INT32 = {"type": "integer", "format": "int32"}
UINT32 = {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295}
SCALARS: dict[int, Schema] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    **dict.fromkeys((F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64), INT64),
    **dict.fromkeys((F.TYPE_UINT64, F.TYPE_FIXED64), UINT64),
    **dict.fromkeys((F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32), INT32),
    **dict.fromkeys((F.TYPE_UINT32, F.TYPE_FIXED32), UINT32),
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated field paths."},
}
CODES = [  # Connect's error codes
    "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists",
    "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range",
    "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated",
]  # fmt: skip
DETAIL: Schema = {
    "type": "object",
    "required": ["type", "value"],
    "properties": {
        "type": {"type": "string", "examples": ["google.rpc.ErrorInfo"]},
        "value": {"type": "string", "contentEncoding": "base64", "description": "Unpadded."},
        "debug": {"type": "object", "description": "The detail as JSON."},
    },
}
ERROR: Schema = {
    "type": "object",
    "description": "Connect error, with the HTTP status of its code.",
    "properties": {
        "code": {"type": "string", "enum": CODES},
        "message": {"type": "string"},
        "details": {"type": "array", "items": DETAIL},
    },
    "required": ["code"],
}
PARAMETERS: dict[str, Schema] = {
    "Connect-Protocol-Version": {
        "description": "The Connect protocol version; when sent, it must be 1.",
        "schema": {"type": "string", "const": "1"},
    },
    "Connect-Timeout-Ms": {
        "description": "The deadline of the call, in milliseconds.",
        "schema": {"type": "integer", "minimum": 0, "maximum": 9999999999},
    },
    "traceparent": {
        "description": "W3C Trace Context (version 00): Verify records the trace id in its log "
        "line and audit record and passes the trace on to the issuer; a value that does not "
        "parse is ignored; other methods ignore it",
        "schema": {"type": "string", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
    },
    "tracestate": {
        "description": "W3C Trace Context: passed on with traceparent (up to 512 characters)",
        "schema": {"type": "string", "maxLength": 512},
    },
    "x-member-id": {
        "description": "dev mode only: the calling member's code, trusted from loopback callers "
        "only; under mTLS the client certificate names the caller and this header, if sent, "
        "must agree",
        "schema": {"type": "string"},
    },
}
INFO = {
    "title": "txverify JSON API",
    "version": "v1",
    "description": """\
The hub's public services over the Connect protocol (https://connectrpc.com/docs/protocol):
POST /<package.Service>/<Method> with a proto3 JSON body (application/json; unknown fields are
refused) or a binary one (application/proto); the answer comes in the same encoding.

The caller is the member its mTLS client certificate names; in dev mode (no TLS) loopback
callers name themselves in the x-member-id header.

A failure is Connect error JSON whose details carry a google.rpc.ErrorInfo: domain "txverify",
a stable reason, and metadata "code", the outcome code of the existing central system (as
base64 bytes in "value", as JSON in "debug"). The service descriptions list the reasons.""",
}


def write(path: Path, root: Path, files: Sequence[Path]) -> None:
    """Write the document of the .proto `files` (under the import root `root`) to `path`."""
    text = json.dumps(document(descriptors(root, files)), indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def descriptors(root: Path, files: Sequence[Path]) -> pb.FileDescriptorSet:
    """The files' descriptors with their comments, as protoc compiles them."""
    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptors.pb"
        args = [f"-I{root}", f"-I{well_known}", f"--descriptor_set_out={out}"]
        names = [str(p.relative_to(root)) for p in files]
        code = protoc.main(["grpc_tools.protoc", *args, "--include_source_info", *names])
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        return pb.FileDescriptorSet.FromString(out.read_bytes())


def comments(file: pb.FileDescriptorProto) -> Comments:
    """Each commented element's comment, by location path, without the space after //."""
    found: Comments = {}
    for loc in file.source_code_info.location:
        lines = (loc.leading_comments or loc.trailing_comments).rstrip().split("\n")
        if any(lines):
            found[tuple(loc.path)] = "\n".join(ln.removeprefix(" ").rstrip() for ln in lines)
    return found


def joined(*parts: str) -> dict[str, str]:
    """A description of the non-empty parts, one a line (none when all are empty)."""
    text = "\n".join(p for p in parts if p)
    return {"description": text} if text else {}


class Schemas:
    """components/schemas: the messages and enums the RPCs reach, as proto3 JSON."""

    def __init__(self, files: Sequence[pb.FileDescriptorProto]) -> None:
        self.messages: dict[str, Located[pb.DescriptorProto]] = {}
        self.enums: dict[str, Located[pb.EnumDescriptorProto]] = {}
        self.schemas: dict[str, Schema] = {}
        for file in files:
            self._index(comments(file), file.package, (), file)

    def _index(self, found: Comments, prefix: str, path: Loc, parent: Parent) -> None:
        # Location paths use the field numbers of descriptor.proto: a file's message_type is 4
        # and enum_type 5, a message's nested_type 3 and enum_type 4, a field or value 2.
        if isinstance(parent, pb.FileDescriptorProto):
            messages, enum_no, message_no = parent.message_type, 5, 4
        else:
            messages, enum_no, message_no = parent.nested_type, 4, 3
        for i, enum in enumerate(parent.enum_type):
            self.enums[f"{prefix}.{enum.name}"] = (enum, found, (*path, enum_no, i))
        for i, msg in enumerate(messages):
            name = f"{prefix}.{msg.name}"
            self.messages[name] = (msg, found, (*path, message_no, i))
            self._index(found, name, (*path, message_no, i), msg)

    def ref(self, name: str) -> Schema:
        """The schema of a well-known type, or a $ref to the message or enum (added if new)."""
        if name in WELL_KNOWN:
            return WELL_KNOWN[name]
        if name not in self.enums and name not in self.messages:
            raise SystemExit(f"{name} has no JSON mapping here: add it to WELL_KNOWN")
        if name not in self.schemas:
            self.schemas[name] = {}  # taken, for messages that contain themselves
            self.schemas[name] = self._enum(name) if name in self.enums else self._message(name)
        return {"$ref": f"#/components/schemas/{name}"}

    def _enum(self, name: str) -> Schema:
        enum, found, path = self.enums[name]
        values = [
            f"- {v.name}: " + found[key].replace("\n", "\n  ")
            for i, v in enumerate(enum.value)
            if (key := (*path, 2, i)) in found
        ]
        names = [v.name for v in enum.value]
        return {"type": "string", "enum": names, **joined(found.get(path, ""), *values)}

    def _message(self, name: str) -> Schema:
        msg, found, path = self.messages[name]
        properties: dict[str, Schema] = {}
        oneofs: dict[str, list[str]] = {}
        for i, field in enumerate(msg.field):
            schema, note = self._field(field), ""
            if field.proto3_optional:
                note = "optional: absent means not set"
            elif field.HasField("oneof_index"):
                oneof = msg.oneof_decl[field.oneof_index].name
                oneofs.setdefault(oneof, []).append(field.json_name)
                note = f"Part of oneof `{oneof}`: set at most one."
            comment = found.get((*path, 2, i), "")  # beside a $ref too, as OpenAPI 3.1 allows
            properties[field.json_name] = {
                **schema,
                **joined(comment, schema.get("description", ""), note),
            }
        schema = {"type": "object", **joined(found.get(path, "")), "properties": properties}
        return {**schema, "additionalProperties": False, **({"x-oneof": oneofs} if oneofs else {})}

    def _field(self, field: pb.FieldDescriptorProto) -> Schema:
        entry = self.messages.get(field.type_name.lstrip("."))
        if field.label == F.LABEL_REPEATED and entry and entry[0].options.map_entry:
            return {"type": "object", "additionalProperties": self._value(entry[0].field[1])}
        if field.label == F.LABEL_REPEATED:
            return {"type": "array", "items": self._value(field)}
        return self._value(field)

    def _value(self, field: pb.FieldDescriptorProto) -> Schema:
        if field.type in (F.TYPE_MESSAGE, F.TYPE_ENUM):
            return self.ref(field.type_name.lstrip("."))
        return SCALARS[field.type]


def operation(schemas: Schemas, service: str, method: pb.MethodDescriptorProto, doc: str) -> Schema:
    """The POST of one unary RPC: proto3 JSON or binary in and out, Connect error JSON."""
    binary = {"application/proto": {"schema": {"type": "string", "format": "binary"}}}
    request = {"application/json": {"schema": schemas.ref(method.input_type.lstrip("."))}}
    response = {"application/json": {"schema": schemas.ref(method.output_type.lstrip("."))}}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/connect.error"}}}
    return {
        "operationId": f"{service}.{method.name}",
        "tags": [service],
        **joined(doc),
        "parameters": [{"$ref": f"#/components/parameters/{p}"} for p in sorted(PARAMETERS)],
        "requestBody": {"required": True, "content": {**request, **binary}},
        "responses": {
            "200": {"description": "Success", "content": {**response, **binary}},
            "default": {"description": "Connect error", "content": error},
        },
    }


def document(fds: pb.FileDescriptorSet) -> Schema:
    """The OpenAPI 3.1 document of SERVICES' unary RPCs."""
    schemas = Schemas(fds.file)
    paths: dict[str, Schema] = {}
    tags: dict[str, Schema] = {}
    for file in fds.file:
        found = comments(file)  # a file's service is 6 in the location path, its method 2
        for s, service in enumerate(file.service):
            name = f"{file.package}.{service.name}"
            if name not in SERVICES:
                continue
            tags[name] = {"name": name, **joined(found.get((6, s), ""))}
            for m, method in enumerate(service.method):
                if not (method.client_streaming or method.server_streaming):
                    post = operation(schemas, name, method, found.get((6, s, 2, m), ""))
                    paths[f"/{name}/{method.name}"] = {"post": post}
    if missing := set(SERVICES) - set(tags):
        raise SystemExit(f"services not in the .proto files: {sorted(missing)}")
    parameters = {
        k: {"name": k, "in": "header", "required": False, **v} for k, v in PARAMETERS.items()
    }
    return {
        "openapi": "3.1.0",
        "info": INFO,
        "tags": [tags[name] for name in sorted(tags)],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted({**schemas.schemas, "connect.error": ERROR}.items())),
            "parameters": dict(sorted(parameters.items())),
        },
    }
