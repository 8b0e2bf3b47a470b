"""Verify one slip through the hub's JSON API (the Connect protocol) with httpx.

    python verify_httpx.py [--url BASE_URL] [--member CODE] [--certs DIR]
                           [--timeout SECONDS] [--request-id ID] QR_TEXT

As a library: verify(base_url, member, qr_text) returns the VerifyResponse as parsed
proto3 JSON (a dict: lowerCamelCase names, int64 as strings, enums by name), or raises
VerifyError with the Connect code, the ErrorInfo reason and outcome code, and the
RetryInfo delay. Needs only httpx (pip install httpx).

As a script it prints the answer's JSON on stdout and a summary (verdict, amount,
sending bank) on stderr, and exits 0 whatever the verdict; on a failure it prints the
Connect error JSON on stdout and its code, reason and outcome code on stderr, and
exits 2. BASE_URL: $TXVERIFY_JSON_URL, else http://127.0.0.1:50081 (https:// with
--certs), where `txverify up` serves the JSON API. CODE: $TXVERIFY_MEMBER, else 002,
sent as the x-member-id header (dev mode). --certs DIR ($TXVERIFY_CERTS): mTLS with
DIR/ca.pem, DIR/CODE.pem and DIR/CODE-key.pem; the hub takes CODE from the certificate.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx

VERIFY = "txverify.v1.VerificationService/Verify"
MEMBER_HEADER = "x-member-id"
EXIT_ERROR = 2


class VerifyError(Exception):
    """A Connect error from the hub, or no answer at all (code "unavailable", no reason).

    code: the Connect code ("invalid_argument", "not_found", ...); http_status: the HTTP
    status (0 when nothing answered); reason and outcome_code: the google.rpc.ErrorInfo's
    reason ("INVALID_SLIP_QR") and metadata["code"] ("6400"), empty when absent; metadata:
    all of ErrorInfo's metadata; retry_delay: seconds from google.rpc.RetryInfo, or None;
    body: the Connect error JSON as the hub sent it."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int = 0,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        retry_delay: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.message = message
        self.http_status = http_status
        self.reason = reason
        self.metadata = metadata or {}
        self.outcome_code = self.metadata.get("code", "")
        self.retry_delay = retry_delay
        self.body = body or {"code": code, "message": message}


def _detail(detail: dict[str, Any]) -> dict[str, Any]:
    """One error detail as proto3 JSON: decoded from its bytes when google.rpc (package
    googleapis-common-protos) is installed, else the "debug" JSON the hub puts beside them."""
    try:
        from google.protobuf import json_format, message
        from google.rpc import error_details_pb2
    except ImportError:
        return dict(detail.get("debug") or {})
    package, _, name = str(detail.get("type", "")).rpartition(".")
    kind = getattr(error_details_pb2, name, None) if package == "google.rpc" else None
    value = str(detail.get("value", ""))
    if kind is None:  # a detail type this client does not know
        return dict(detail.get("debug") or {})
    try:
        decoded_bytes = base64.b64decode(value + "=" * (-len(value) % 4))  # sent unpadded
        parsed = kind.FromString(decoded_bytes)
    except (ValueError, message.DecodeError):
        return dict(detail.get("debug") or {})
    decoded: dict[str, Any] = json_format.MessageToDict(parsed)
    return decoded


def error_of(response: httpx.Response) -> VerifyError:
    """The VerifyError of a failed call: its Connect error JSON, read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "code" not in body:  # a proxy's page, say
        body = {"code": "unknown", "message": f"HTTP {response.status_code}: {response.text}"}
    reason, metadata, retry = "", {}, None
    for detail in body.get("details", []):
        shown = _detail(detail)
        if detail.get("type") == "google.rpc.ErrorInfo":
            reason, metadata = shown.get("reason", ""), dict(shown.get("metadata", {}))
        elif detail.get("type") == "google.rpc.RetryInfo":
            retry = float(str(shown.get("retryDelay", "0s")).rstrip("s"))  # Duration: "1.5s"
    return VerifyError(
        str(body["code"]),
        str(body.get("message", "")),
        http_status=response.status_code,
        reason=reason,
        metadata=metadata,
        retry_delay=retry,
        body=body,
    )


def verify(
    base_url: str,
    member: str | None,
    qr_text: str,
    *,
    request_id: str = "",
    timeout: float = 10.0,
    certs: Path | None = None,
) -> dict[str, Any]:
    """POST {"qrText": ...} to BASE_URL/txverify.v1.VerificationService/Verify.

    member: sent as x-member-id (dev mode); None sends no header (under mTLS the
    certificate names you). timeout: the deadline, as Connect-Timeout-Ms. certs: a
    `txverify certs init` directory for mTLS as `member`."""
    request: dict[str, Any] = {"qrText": qr_text}
    if request_id:
        request["requestId"] = request_id  # reuse it when you retry: answered once
    headers = {"Connect-Timeout-Ms": str(int(timeout * 1000))}
    if member is not None and certs is None:
        headers[MEMBER_HEADER] = member
    verify_tls: ssl.SSLContext | bool = True
    if certs is not None:
        if not member:
            raise ValueError("mTLS needs the member whose certificate to present")
        verify_tls = ssl.create_default_context(cafile=certs / "ca.pem")
        verify_tls.load_cert_chain(certs / f"{member}.pem", certs / f"{member}-key.pem")
    url = f"{base_url.rstrip('/')}/{VERIFY}"
    try:
        # The client waits a little longer than the deadline, so that the hub's own
        # deadline_exceeded answer arrives.
        with httpx.Client(verify=verify_tls, timeout=timeout + 2) as client:
            response = client.post(url, json=request, headers=headers)  # application/json
    except httpx.HTTPError as exc:
        raise VerifyError("unavailable", f"no answer from {url}: {exc}") from exc
    if response.status_code != 200:
        raise error_of(response)
    answer: dict[str, Any] = response.json()
    return answer


def baht(satang: int) -> str:
    """3252810 -> "32,528.10" (for display: amounts are integer satang)."""
    sign = "-" if satang < 0 else ""
    whole, cents = divmod(abs(satang), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a slip through the txverify JSON API.")
    parser.add_argument("qr_text", metavar="QR_TEXT", help="the slip's mini QR text, as scanned")
    parser.add_argument("--url", default=os.environ.get("TXVERIFY_JSON_URL", ""),
                        help="the JSON API (default: $TXVERIFY_JSON_URL, else "
                        "http://127.0.0.1:50081, https:// with --certs)")  # fmt: skip
    parser.add_argument("--member", default=os.environ.get("TXVERIFY_MEMBER") or "002",
                        help="your member code (default: $TXVERIFY_MEMBER, else 002)")  # fmt: skip
    parser.add_argument("--certs", type=Path, default=os.environ.get("TXVERIFY_CERTS") or None,
                        help="mTLS with DIR/ca.pem, DIR/CODE.pem, DIR/CODE-key.pem")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    parser.add_argument("--request-id", default="", help="your request id (reuse it to retry)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    scheme = "https" if args.certs else "http"
    url = args.url or f"{scheme}://127.0.0.1:50081"
    try:
        answer = verify(url, args.member, args.qr_text, request_id=args.request_id,
                        timeout=args.timeout, certs=args.certs)  # fmt: skip
    except VerifyError as error:
        print(json.dumps(error.body, indent=2, ensure_ascii=False))
        print(f"error:        {error.code} (HTTP {error.http_status})", file=sys.stderr)
        print(f"reason:       {error.reason}", file=sys.stderr)
        print(f"outcome code: {error.outcome_code}", file=sys.stderr)
        print(f"message:      {error.message}", file=sys.stderr)
        if error.retry_delay is not None:
            print(f"retry after:  {error.retry_delay:g} s", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    transaction = answer.get("transaction", {})
    satang = int(transaction.get("amount", {}).get("satang", "0"))  # int64: a JSON string
    print(f"verdict:      {answer.get('verdict')}", file=sys.stderr)
    print(f"amount:       {satang} satang ({baht(satang)} THB)", file=sys.stderr)
    print(f"sending bank: {transaction.get('sendingBank')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
