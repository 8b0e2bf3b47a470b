#!/bin/sh
# Verify one slip through the hub's JSON API (the Connect protocol) with curl.
#
#   sh verify.sh [--url BASE_URL] [--member CODE] [--certs DIR] [--timeout SECONDS]
#                [--request-id ID] QR_TEXT
#
# BASE_URL: $TXVERIFY_JSON_URL, else http://127.0.0.1:50081 (https:// with --certs),
# where `txverify up` serves the JSON API. CODE: $TXVERIFY_MEMBER, else 002; in dev
# mode it is sent as the x-member-id header. --certs DIR ($TXVERIFY_CERTS): mTLS with
# DIR/ca.pem and DIR/CODE.pem, DIR/CODE-key.pem, the hub taking CODE from the certificate.
#
# Prints the hub's JSON answer on stdout and a summary (verdict, amount, sending bank)
# on stderr; exits 0 whatever the verdict. On a failure prints the Connect error JSON
# on stdout and its code, ErrorInfo reason and outcome code on stderr, and exits 2.
# Usage errors exit 64. Needs only a POSIX shell, curl, sed and awk.
set -u

usage() {
  [ $# -gt 0 ] && echo "verify.sh: $1" >&2
  echo "usage: sh verify.sh [--url BASE_URL] [--member CODE] [--certs DIR] [--timeout SECONDS]" >&2
  echo "                    [--request-id ID] QR_TEXT" >&2
  exit 64
}

url=${TXVERIFY_JSON_URL:-}
member=${TXVERIFY_MEMBER:-002}
certs=${TXVERIFY_CERTS:-}
timeout=10
request_id=
qr=
while [ $# -gt 0 ]; do
  case $1 in
    --url) [ $# -ge 2 ] || usage "$1 needs a value"; url=$2; shift 2 ;;
    --member) [ $# -ge 2 ] || usage "$1 needs a value"; member=$2; shift 2 ;;
    --certs) [ $# -ge 2 ] || usage "$1 needs a value"; certs=$2; shift 2 ;;
    --timeout) [ $# -ge 2 ] || usage "$1 needs a value"; timeout=$2; shift 2 ;;
    --request-id) [ $# -ge 2 ] || usage "$1 needs a value"; request_id=$2; shift 2 ;;
    -h | --help) usage ;;
    --) shift; break ;;
    -*) usage "unknown option $1" ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || usage "give one QR text"
qr=$1
if [ -z "$url" ]; then
  if [ -n "$certs" ]; then url=https://127.0.0.1:50081; else url=http://127.0.0.1:50081; fi
fi
timeout_ms=$(awk -v t="$timeout" 'BEGIN { if (t + 0 > 0) printf "%d", t * 1000 }')
[ -n "$timeout_ms" ] || usage "--timeout must be a positive number of seconds, got $timeout"

# A JSON string: backslashes and double quotes escaped (a QR text is printable ASCII).
json_string() {
  printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}
body="{\"qrText\": $(json_string "$qr")"
[ -n "$request_id" ] && body="$body, \"requestId\": $(json_string "$request_id")"
body="$body}"

# Dev mode: who you are is the x-member-id header. mTLS: your certificate says it.
if [ -n "$certs" ]; then
  set -- --cacert "$certs/ca.pem" --cert "$certs/$member.pem" --key "$certs/$member-key.pem"
else
  set -- -H "x-member-id: $member"
fi
# Connect-Timeout-Ms is the deadline the hub works to (it answers deadline_exceeded);
# curl's own limit is a little longer, so that answer arrives.
answer=$(printf '%s' "$body" | curl -sS --connect-timeout 5 \
  --max-time "$(awk -v t="$timeout" 'BEGIN { print t + 2 }')" \
  -H 'Content-Type: application/json' -H "Connect-Timeout-Ms: $timeout_ms" "$@" \
  --data-binary @- -w '\n%{http_code}' "${url%/}/txverify.v1.VerificationService/Verify")
status=$?
if [ "$status" -ne 0 ]; then
  echo "verify.sh: no answer from $url (curl exit $status)" >&2
  exit 2
fi
http_status=${answer##*"
"}
answer=${answer%"
"*}
printf '%s\n' "$answer"

# The summary, read from the hub's JSON with sed: `"name": "value"` as the hub writes it.
field() {
  printf '%s' "$answer" | sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p"
}
if [ "$http_status" = 200 ]; then
  satang=$(printf '%s' "$answer" | sed -n 's/.*"amount": *{ *"satang": *"\([0-9]*\)".*/\1/p')
  satang=${satang:-0} # proto3 JSON leaves out a zero
  baht=$((satang / 100))
  grouped=
  while [ ${#baht} -gt 3 ]; do
    rest=${baht%???}
    grouped=",${baht#"$rest"}$grouped"
    baht=$rest
  done
  echo "verdict:      $(field verdict)" >&2
  printf 'amount:       %s satang (%s%s.%02d THB)\n' "$satang" "$baht" "$grouped" \
    $((satang % 100)) >&2
  echo "sending bank: $(field sendingBank)" >&2
  exit 0
fi
# A Connect error: {"code": "invalid_argument", "message": ..., "details": [{"type":
# "google.rpc.ErrorInfo", "value": BASE64, "debug": {"reason": ..., "metadata": {"code":
# "6400", ...}}}]}. "debug" is the detail's JSON, which the hub adds beside the bytes.
detail() { # a field of the ErrorInfo's "debug" (no "}" comes before it there)
  printf '%s' "$answer" | sed -n "s/.*\"google\\.rpc\\.ErrorInfo\"[^}]*$1.*/\\1/p"
}
code=$(printf '%s' "$answer" | sed -n 's/^{ *"code": *"\([a-z_]*\)".*/\1/p')
reason=$(detail '"reason": *"\([^"]*\)"')
outcome=$(detail '"metadata": *{[^}]*"code": *"\([0-9]*\)"')
retry=$(field retryDelay)
echo "error:        ${code:-unknown} (HTTP $http_status)" >&2
echo "reason:       $reason" >&2
echo "outcome code: $outcome" >&2
[ -n "$retry" ] && echo "retry after:  $retry" >&2
exit 2
