"""The line per Verify: formatted by the log's flusher from the record, as logging would."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from txverify.hub.outcome import RequestLog, Verification
from txverify.runtime import logs
from txverify.v1 import verification_pb2


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


def _answer() -> Verification:
    return Verification(
        0.0, caller="014", requester="014", request_id="r-1", reference='a"b\\c',
        issuer="002", trans_ref="20261203002000001", verdict=verification_pb2.VERDICT_VALID,
        ended=1764745200.123, elapsed=0.00456,
    )  # fmt: skip


def _failure() -> Verification:
    return Verification(
        0.0, caller="x-member-id?", status="PERMISSION_DENIED", reason="UNKNOWN_MEMBER",
        ended=1764745200.5, elapsed=0.0001,
    )  # fmt: skip


@pytest.mark.parametrize("record", [_answer(), _failure()], ids=["answer", "failure"])
def test_the_deferred_line_is_the_line_logging_writes(
    record: Verification, root_handlers: None
) -> None:
    deferred, plain = io.StringIO(), io.StringIO()
    buffered = logs.BufferedStreamHandler(deferred, interval=60)
    buffered.setFormatter(logs.JsonFormatter())
    logging.getLogger().handlers[:] = [buffered]
    logging.getLogger().setLevel(logging.INFO)
    assert logs.deferring_handler(logging.getLogger("txverify.hub.verification")) is buffered
    RequestLog().verified(record)
    assert "" == deferred.getvalue()  # not formatted by the caller
    buffered.flush()

    direct = logging.StreamHandler(plain)
    direct.setFormatter(logs.JsonFormatter())
    logging.getLogger().handlers[:] = [direct]
    assert logs.deferring_handler(logging.getLogger("txverify.hub.verification")) is None
    RequestLog().verified(record)
    buffered.close()

    one, other = json.loads(deferred.getvalue()), json.loads(plain.getvalue())
    assert one.pop("time").startswith("2025-12-03T07:00:00.")
    other.pop("time")  # logging stamps its own time
    assert list(one.items()) == list(other.items())
    assert "verify" == one["message"]
    assert record.status == one["status"]


def test_one_line_per_record_in_order_with_other_lines(root_handlers: None) -> None:
    out = io.StringIO()
    handler = logs.BufferedStreamHandler(out, interval=60)
    handler.setFormatter(logs.JsonFormatter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    for n in range(200):
        RequestLog().verified(Verification(0.0, caller=f"c{n}", ended=1.0))
        if n == 100:
            logging.getLogger("other").info("between")
    handler.close()

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert 201 == len(lines)
    assert "between" == lines[101]["message"]
    assert [f"c{n}" for n in range(200)] == [x["caller"] for x in lines if "caller" in x]
