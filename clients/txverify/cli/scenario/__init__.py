"""`txverify scenario run`: scripted journeys through a network, each step checked.

The modules, one job each: values (the kinds of values keys take), steps (the step
types: schema and action), expect (what an outcome must be), files (a file checked
whole), network (where it runs), runner, report (tables, JUnit), command (the CLI).

A scenario file (YAML) describes a network and steps; every step is checked
against its `expect` (without one it must simply succeed). Each file runs on a
fresh in-process network (simulated banks and a hub on loopback port 0) unless
`--hub HOST:PORT --control HOST:PORT` name a running one (dev mode, or mTLS with
`--certs DIR`: each caller presents its own certificate); after a
failed step the rest of that scenario is skipped. Files are checked whole
before anything runs: an unknown key or step type, a bad value or a slip
used before it is saved stops the run (exit 2) naming the file, step and line.
scenarios/README.md has a tour; the schema:

    name: Issuer outage and recovery        # required
    description: what it shows               # optional
    network:                                 # ignored with --hub
      banks: ["002", "014"]                  # simulated members, quoted (900 = the
                                             # e-wallet); the first verifies by default
      transactions: 50                       # seeded per bank, about 5% of them expired
      seed: 1
      retention_days: 7                      # at every bank; default: each bank's own
      hub: {issuer_timeout: 5.0, breaker_failures: 5, breaker_failing_seconds: 1.0,
            breaker_cooldown: 5.0, rate_limit_rps: 0, rate_limit_burst: 100,
            not_found_cost: 10, max_in_flight: 200}
    steps:
      - TYPE: ARGS
        expect: {...}                        # optional
        name: a label for the report         # optional

Step types and their ARGS:

    transfer  bank, amount ("150.00" baht), to (a proxy: 0812345678 or TYPE:VALUE with
              TYPE MSISDN, NATID, EWALLETID, EMAIL, BILLERID) or to_account, to_bank,
              fee, from_account, merchant, ref1, ref2, ref3, save (a name for its slip),
              time (a backdated transfer: ISO date-time, Bangkok unless an offset; now-10d)
    pick      save, bank, state (VISIBLE, NOT_YET_VISIBLE, EXPIRED, PENDING; VISIBLE by
              default),
              status (COMPLETED, REVERSED), skip: n -- keeps a slip the bank already has
    verify    slip (a saved name; by_ref: true sends bank and transRef instead of the QR),
              or qr (QR text), or bank and ref; as (the caller's member code), reference,
              request_id, timeout (seconds, 5), expect: {amount, amount_at_least,
              amount_at_most, receiver (account or TYPE:VALUE, or a list), receiving_bank,
              since, until (ISO date-time, Bangkok unless an offset; or now, now-10m, now+1h)}
    member    suspend / resume / terminate: CODE (with reason); register: {code, name,
              kind (BANK, NON_BANK), issuer_endpoint or issuer_endpoint_of: CODE (that
              simulated bank's issuer address), roles: [REQUESTER, ISSUER]};
              subscribe / unsubscribe: {code, role}. Called as the operator.
    faults    bank, then any Faults field (latency_ms, jitter_ms, error_rate, error_status,
              hang, refuse, flap_down_s, flap_period_s, visibility_delay_ms, pending_ms):
              those change, the others stay; clear: true starts from none
    restart   bank, down (seconds closed, 0): close its issuer port and open it again
    reverse   slip, or bank and ref
    wait      SECONDS
    usage     as (the caller; default: the first bank), member (whose usage; alone: read
              as the operator): GetUsage, its answer checked with expect.fields
    repeat    times, step (a step), expect: each run must meet expect

`expect` (transfer, verify, member, faults, reverse, usage):

    status: OK or a gRPC status name        reason: the ErrorInfo reason, e.g. SLIP_NOT_FOUND
    metadata: {cause: circuit_open}         ErrorInfo metadata
    fields: {transaction.amount.satang: 15000, checks.0.outcome: PASS}
            dotted paths into the answer (lists by index, enums by name with or without
            their prefix); "${s1.trans_ref}" stands for a saved slip's trans_ref, qr_text,
            bank or amount_satang
    verdict: VALID, MISMATCH, DUPLICATE, INCONCLUSIVE     (verify only, like the next two)
    duplicate_count, duplicate_count_in_scope: n         replayed: true or false
    latency_ms_below, latency_ms_above: milliseconds

A reason or metadata without a status means any error that carries them.
"""
