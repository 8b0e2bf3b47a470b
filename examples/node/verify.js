#!/usr/bin/env node
// A small txverify client in Node.js: verify one slip and print the answer as JSON.
//
//   node verify.js [--hub HOST:PORT] [--member CODE] [--certs DIR] [--timeout SECONDS]
//                  [--request-id ID] [--reference REF] QR_TEXT
//   node verify.js ... --bank 014 --ref TRANS_REF
//
// It reads the contract straight from proto/ with @grpc/proto-loader (no code
// generation). On success it prints the VerifyResponse and exits 0, whatever the
// verdict: a failed expectation is an answer, not an error. On a gRPC error it
// decodes the google.rpc.Status in the `grpc-status-details-bin` trailer, prints
// {"error": {"status", "reason", "code", ...}} and exits 2. Usage errors exit 64.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

// The directory given to protoc as `-I proto`: imports are relative to it.
const PROTO_ROOT = process.env.TXVERIFY_PROTO_ROOT || path.resolve(__dirname, '..', '..', 'proto');
const MEMBER_HEADER = 'x-member-id';
const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const EXIT_RPC_ERROR = 2;
const EXIT_USAGE = 64;

const USAGE = `usage: node verify.js [options] QR_TEXT
       node verify.js [options] --bank CODE --ref TRANS_REF

options:
  --hub HOST:PORT     the hub (default: $TXVERIFY_HUB, else localhost:50051)
  --member CODE       your member code, sent as the x-member-id header
                      (default: $TXVERIFY_MEMBER, else 002)
  --certs DIR         call over mTLS with DIR/ca.pem, DIR/CODE.pem, DIR/CODE-key.pem
                      (a \`txverify certs init\` directory; default: $TXVERIFY_CERTS)
  --timeout SECONDS   deadline of the call (default 10)
  --request-id ID     your request id; reuse it when you retry (default: a new one)
  --reference REF     requester_reference: where the slip is presented (duplicate scope)`;

// The google.rpc messages of the error model, with Google's field numbers
// (google/rpc/status.proto and error_details.proto, trimmed to what is read here).
const RPC_PROTOS = [
  `syntax = "proto3";
   package google.protobuf;
   message Any { string type_url = 1; bytes value = 2; }
   message Duration { int64 seconds = 1; int32 nanos = 2; }`,
  `syntax = "proto3";
   package google.rpc;
   message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
   message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
   message RetryInfo { google.protobuf.Duration retry_delay = 1; }
   message BadRequest {
     message FieldViolation { string field = 1; string description = 2; }
     repeated FieldViolation field_violations = 1;
   }`,
];

function usage(message) {
  process.stderr.write(`verify.js: ${message}\n${USAGE}\n`);
  process.exit(EXIT_USAGE);
}

function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        hub: { type: 'string' },
        member: { type: 'string' },
        certs: { type: 'string' },
        timeout: { type: 'string', default: '10' },
        'request-id': { type: 'string' },
        reference: { type: 'string', default: '' },
        bank: { type: 'string' },
        ref: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    usage(err.message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const bySlipRef = values.bank !== undefined || values.ref !== undefined;
  if (bySlipRef ? positionals.length !== 0 || !values.bank || !values.ref : positionals.length !== 1) {
    usage('give either one QR text or both --bank and --ref');
  }
  const timeout = Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) {
    usage(`--timeout must be a positive number of seconds, got ${values.timeout}`);
  }
  return {
    hub: values.hub || process.env.TXVERIFY_HUB || 'localhost:50051',
    member: values.member || process.env.TXVERIFY_MEMBER || '002',
    certs: values.certs || process.env.TXVERIFY_CERTS || '',
    timeoutMs: timeout * 1000,
    request: {
      // Exactly one of the `slip` oneof.
      ...(bySlipRef
        ? { slipRef: { sendingBank: values.bank, transRef: values.ref } }
        : { qrText: positionals[0] }),
      // The hub remembers a successful answer under (member, request id) for 24 h:
      // a retry with the same id is answered again (replayed) and counted once.
      requestId: values['request-id'] || crypto.randomUUID().replaceAll('-', ''),
      requesterReference: values.reference,
    },
  };
}

function loadVerificationService() {
  const definition = protoLoader.loadSync('txverify/v1/verification.proto', {
    // Like protoc's -I proto. google/protobuf/timestamp.proto needs no include
    // directory: protobufjs ships the well-known types and resolves them itself.
    includeDirs: [PROTO_ROOT],
    keepCase: false, // trans_ref -> transRef, as in existing slip APIs
    longs: String, // int64 satang and seconds as decimal strings
    enums: String, // "VERDICT_VALID", "TRANSACTION_STATUS_COMPLETED", ...
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).txverify.v1.VerificationService;
}

// The DNS name of the hub's certificate (txverify certs init).
const HUB_NAME = 'hub.txverify';

function channelCredentials(certs, member) {
  if (!certs) {
    // Dev mode (`make run` / `txverify up`): plaintext, loopback only.
    return grpc.credentials.createInsecure();
  }
  // mTLS (`txverify up --tls`): the hub takes our member code from our certificate's CN.
  return grpc.credentials.createSsl(
    fs.readFileSync(path.join(certs, 'ca.pem')),
    fs.readFileSync(path.join(certs, `${member}-key.pem`)),
    fs.readFileSync(path.join(certs, `${member}.pem`)),
  );
}

function statusName(code) {
  const entry = Object.entries(grpc.status).find(([, value]) => value === code);
  return entry ? entry[0] : String(code);
}

// Decodes the google.rpc.Status that the hub puts in the `grpc-status-details-bin` trailer.
function decodeError(err) {
  const error = {
    status: statusName(err.code),
    reason: '',
    code: '',
    message: err.details || err.message,
    metadata: {},
  };
  const raw = err.metadata ? err.metadata.get(STATUS_DETAILS_KEY)[0] : undefined;
  if (!raw) {
    return error; // e.g. the hub is unreachable: grpc-js made the status itself
  }
  const root = new protobuf.Root();
  for (const source of RPC_PROTOS) {
    protobuf.parse(source, root);
  }
  const types = {
    'google.rpc.ErrorInfo': root.lookupType('google.rpc.ErrorInfo'),
    'google.rpc.BadRequest': root.lookupType('google.rpc.BadRequest'),
    'google.rpc.RetryInfo': root.lookupType('google.rpc.RetryInfo'),
  };
  let status;
  try {
    status = root.lookupType('google.rpc.Status').decode(raw);
  } catch {
    return error; // not a Status: keep the plain gRPC status
  }
  error.message = status.message || error.message;
  for (const detail of status.details) {
    // type_url is "type.googleapis.com/google.rpc.ErrorInfo"
    const typeName = detail.typeUrl.slice(detail.typeUrl.lastIndexOf('/') + 1);
    const type = types[typeName];
    if (!type) {
      continue; // a detail this client does not know; ignore it
    }
    const message = type.toObject(type.decode(detail.value), { longs: String, defaults: true });
    if (typeName === 'google.rpc.ErrorInfo') {
      error.reason = message.reason;
      error.domain = message.domain; // "txverify"
      error.metadata = message.metadata;
      error.code = message.metadata.code || ''; // the central system's outcome code, e.g. "6400"
    } else if (typeName === 'google.rpc.BadRequest') {
      error.violations = message.fieldViolations;
    } else {
      const delay = message.retryDelay || { seconds: '0', nanos: 0 };
      error.retryAfterSeconds = Number(delay.seconds) + delay.nanos / 1e9;
    }
  }
  return error;
}

function main() {
  const options = parseCommandLine(process.argv.slice(2));
  const VerificationService = loadVerificationService();
  // Under mTLS, check that the server is the hub by the name only the hub's certificate
  // carries (a member's certificate from the same CA must not pass for it).
  const channelOptions = options.certs ? { 'grpc.ssl_target_name_override': HUB_NAME } : {};
  const client = new VerificationService(
    options.hub,
    channelCredentials(options.certs, options.member),
    channelOptions,
  );
  const metadata = new grpc.Metadata();
  metadata.set(MEMBER_HEADER, options.member);
  const deadline = new Date(Date.now() + options.timeoutMs);

  client.Verify(options.request, metadata, { deadline }, (err, response) => {
    client.close();
    if (err) {
      process.stdout.write(`${JSON.stringify({ error: decodeError(err) }, null, 2)}\n`);
      process.exitCode = EXIT_RPC_ERROR;
      return;
    }
    process.stdout.write(`${JSON.stringify(response, null, 2)}\n`);
  });
}

main();
