#!/usr/bin/env node
// Verify one slip through the hub's JSON API (the Connect protocol) with Node's fetch.
//
//   node fetch.mjs [--url BASE_URL] [--member CODE] [--timeout SECONDS] [--request-id ID] QR_TEXT
//
// Node 20 or newer, no dependencies. BASE_URL: $TXVERIFY_JSON_URL, else
// http://127.0.0.1:50081, where `txverify up` serves the JSON API. CODE: $TXVERIFY_MEMBER,
// else 002, sent as the x-member-id header (dev mode; Node's fetch has no option for a
// client certificate: under mTLS use connect-node/).
//
// Prints the answer's JSON on stdout and a summary (verdict, amount, sending bank) on
// stderr, and exits 0 whatever the verdict. On a failure it prints the Connect error
// JSON on stdout and its code, ErrorInfo reason and outcome code on stderr, and exits 2.
// Usage errors exit 64.
import { parseArgs } from 'node:util';

const VERIFY = 'txverify.v1.VerificationService/Verify';
const EXIT_ERROR = 2;
const EXIT_USAGE = 64;

function usage(message) {
  process.stderr.write(
    `fetch.mjs: ${message}\nusage: node fetch.mjs [--url BASE_URL] [--member CODE] ` +
      '[--timeout SECONDS] [--request-id ID] QR_TEXT\n',
  );
  process.exit(EXIT_USAGE);
}

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        url: { type: 'string' },
        member: { type: 'string' },
        timeout: { type: 'string', default: '10' },
        'request-id': { type: 'string' },
      },
    });
  } catch (err) {
    usage(err.message);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) {
    usage('give one QR text');
  }
  const timeout = Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) {
    usage(`--timeout must be a positive number of seconds, got ${values.timeout}`);
  }
  return {
    url: values.url || process.env.TXVERIFY_JSON_URL || 'http://127.0.0.1:50081',
    member: values.member || process.env.TXVERIFY_MEMBER || '002',
    timeoutMs: Math.round(timeout * 1000),
    qrText: positionals[0],
    // Your request id, to reuse when you retry: the hub answers it once ("replayed": true
    // after); without one the hub makes one, and does not remember it.
    requestId: values['request-id'] || '',
  };
}

// A Connect error: {"code", "message", "details": [{"type", "value": base64, "debug"}]}.
// "debug" is each detail's JSON, which the hub adds beside the protobuf bytes ("value");
// a client of any Connect server decodes "value" instead (connect-node/ does).
class VerifyError extends Error {
  constructor(httpStatus, body) {
    super(`${body.code}: ${body.message}`);
    this.httpStatus = httpStatus;
    this.body = body;
    this.code = body.code;
    const find = (type) => (body.details || []).find((d) => d.type === type)?.debug;
    const info = find('google.rpc.ErrorInfo') || {};
    this.reason = info.reason || '';
    this.metadata = info.metadata || {};
    this.outcomeCode = this.metadata.code || ''; // the central system's outcome code
    const retry = find('google.rpc.RetryInfo');
    // A google.protobuf.Duration in JSON: "1.500s"
    this.retryDelaySeconds = retry ? Number.parseFloat(retry.retryDelay) : undefined;
  }
}

async function verify({ url, member, timeoutMs, qrText, requestId }) {
  let response;
  try {
    response = await fetch(`${url.replace(/\/+$/, '')}/${VERIFY}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-member-id': member,
        'connect-timeout-ms': String(timeoutMs), // the hub answers deadline_exceeded at it
      },
      body: JSON.stringify(requestId ? { qrText, requestId } : { qrText }), // proto3 JSON
      signal: AbortSignal.timeout(timeoutMs + 2000), // a little longer: that answer arrives
    });
  } catch (err) {
    const why = err.cause?.message || err.message;
    throw new VerifyError(0, { code: 'unavailable', message: `no answer from ${url}: ${why}` });
  }
  let body;
  try {
    body = await response.json();
  } catch {
    body = undefined;
  }
  if (response.status !== 200) {
    const connect = body && typeof body.code === 'string'; // else a proxy's page, say
    const error = connect ? body : { code: 'unknown', message: `HTTP ${response.status}` };
    throw new VerifyError(response.status, error);
  }
  return body;
}

// 3252810n -> "32,528.10" (for display: amounts are integer satang, int64 as a JSON string).
function baht(satang) {
  const whole = (satang / 100n).toLocaleString('en-US');
  return `${whole}.${String(satang % 100n).padStart(2, '0')}`;
}

async function main() {
  const opts = options();
  let answer;
  try {
    answer = await verify(opts);
  } catch (err) {
    if (!(err instanceof VerifyError)) {
      throw err;
    }
    process.stdout.write(`${JSON.stringify(err.body, null, 2)}\n`);
    process.stderr.write(
      `error:        ${err.code} (HTTP ${err.httpStatus})\n` +
        `reason:       ${err.reason}\n` +
        `outcome code: ${err.outcomeCode}\n` +
        `message:      ${err.body.message}\n` +
        (err.retryDelaySeconds === undefined ? '' : `retry after:  ${err.retryDelaySeconds} s\n`),
    );
    process.exitCode = EXIT_ERROR;
    return;
  }
  process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
  const transaction = answer.transaction || {};
  const satang = BigInt(transaction.amount?.satang || '0'); // absent when zero
  process.stderr.write(
    `verdict:      ${answer.verdict}\n` +
      `amount:       ${satang} satang (${baht(satang)} THB)\n` +
      `sending bank: ${transaction.sendingBank}\n`,
  );
}

await main();
