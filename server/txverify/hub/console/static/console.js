// txverify operator console.
// Renders /api/state snapshots pushed every second over server-sent events.
// Vanilla ES2020, no dependencies; every piece of data reaches the DOM through
// textContent (or DOM properties), never through innerHTML.
'use strict';

const TOKEN_KEY = 'txverify-console-token';
const WINDOW_S = 60; // seconds shown in the charts
const DEFAULT_SUSPEND_REASON = 'suspended from the console';
const RESUME_REASON = 'resumed from the console';
const RETRY_MS = 3000; // used only when EventSource gives up by itself
// Distinct, colour-blind-friendly-ish hues; issuers get them in order of first sight.
const PALETTE = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#0891b2',
  '#db2777', '#65a30d', '#475569', '#ea580c', '#4f46e5', '#0d9488'];

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let lastState = null;
let lastSeq = null; // highest `recent` seq already shown, to highlight new rows
const issuerColours = new Map();

// ---------------------------------------------------------------- helpers

/** Create an element. props: class, text, dataset, attributes or DOM properties. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c != null)); // strings become text nodes
  return node;
}

/** Set text only when it changed (keeps the DOM calm on every-second renders). */
function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

/** "2026-11-27T16:01:02+07:00" -> "16:01:02" (the hub already sends Bangkok time). */
function timePart(iso) {
  const m = /T(\d{2}:\d{2}:\d{2})/.exec(iso || '');
  return m ? m[1] : '—';
}

const issuerLabel = (code) => (code === '' ? '(none)' : code);
const fmt = (v, digits = 1) => (v == null || Number.isNaN(Number(v)) ? '—' : Number(v).toFixed(digits));
const last = (arr) => (Array.isArray(arr) && arr.length ? arr[arr.length - 1] : null);

/** Sort issuer codes, the unknown issuer "" last. */
function sortIssuers(codes) {
  return [...codes].sort((a, b) => (a === '') - (b === '') || a.localeCompare(b));
}

function colourFor(code) {
  if (!issuerColours.has(code)) issuerColours.set(code, PALETTE[issuerColours.size % PALETTE.length]);
  return issuerColours.get(code);
}

const errText = (err) => `${err.message}${err.reason ? ` (${err.reason})` : ''}`;

/** Run an operator action on `node`: one at a time, controls disabled meanwhile. */
async function withBusy(node, action) {
  if (!isOperator() || node.dataset.busy === '1') return;
  node.dataset.busy = '1';
  updateControls();
  try { await action(); } finally { delete node.dataset.busy; updateControls(); }
}

/** Run one render step; a surprise in one panel must not freeze the others. */
function safely(fn, ...args) {
  try { fn(...args); } catch (err) { console.error(`console: ${fn.name} failed`, err); }
}

// ---------------------------------------------------------------- toast

let toastTimer = 0;
function toast(message, kind = 'ok') {
  const node = $('#toast');
  node.textContent = message;
  node.className = `show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => node.classList.remove('show'), 7000);
}

// ---------------------------------------------------------------- API

/** POST JSON or FormData; returns {res, data} without throwing on HTTP errors. */
async function request(url, body, tokenValue = token) {
  const headers = {};
  if (tokenValue) headers['X-Console-Token'] = tokenValue;
  let payload = body;
  if (!(body instanceof FormData)) { // FormData sets its own multipart boundary
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const res = await fetch(url, { method: 'POST', headers, body: payload, credentials: 'same-origin' });
  const data = await res.json().catch(() => null); // empty or non-JSON body
  return { res, data: data || {} };
}

/** POST and throw an Error carrying the server's message and reason on failure. */
async function post(url, body) {
  let reply;
  try { reply = await request(url, body); } catch (err) { throw new Error(`network error: ${err.message}`); }
  const { res, data } = reply;
  if (!res.ok) {
    // the token is not (or no longer) accepted: the hub restarted with a new one
    if (res.status === 401 || data.reason === 'NOT_OPERATOR') setToken('');
    throw Object.assign(new Error(data.error || `HTTP ${res.status}`),
      { reason: data.reason || '', httpStatus: res.status });
  }
  return data;
}

// ---------------------------------------------------------------- operator mode

const isOperator = () => token !== '';

function setToken(value) {
  token = value;
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  renderMode();
}

function renderMode() {
  const op = isOperator();
  const badge = $('#operator');
  setText(badge, op ? 'operator' : 'read-only');
  badge.classList.toggle('op', op);
  $('#login').hidden = op;
  $('#logout').hidden = !op;
  $('#readonly-note').hidden = op;
  document.body.classList.toggle('read-only', !op);
  updateControls();
}

/** Enable or disable every action control from mode, row state and pending requests. */
function updateControls() {
  const ro = !isOperator();
  for (const tr of $$('#members tbody tr')) {
    const status = tr.dataset.status;
    const busy = tr.dataset.busy === '1';
    $('button.suspend', tr).disabled = ro || busy || status !== 'ACTIVE';
    $('button.resume', tr).disabled = ro || busy || status !== 'SUSPENDED';
    $('input.reason', tr).disabled = ro || busy || status !== 'ACTIVE';
  }
  for (const card of $$('#banks .bank')) {
    const busy = card.dataset.busy === '1';
    for (const control of $$('input, button', card)) control.disabled = ro || busy;
  }
  const form = $('#verify');
  $('button[type=submit]', form).disabled = ro || form.dataset.busy === '1';
}

async function submitLogin(ev) {
  ev.preventDefault();
  const input = ev.currentTarget.elements.namedItem('token');
  const value = input.value.trim();
  if (!value) return;
  try {
    const { res, data } = await request('/api/login', { token: value }, value);
    if (res.ok && data.operator) {
      input.value = '';
      setToken(value);
      toast('logged in: operator actions enabled');
    } else toast(`login refused: ${data.error || `HTTP ${res.status}`}`, 'error');
  } catch (err) { toast(`login failed: ${err.message}`, 'error'); }
}

function logout() {
  setToken('');
  toast('logged out: read-only');
}

/** A token kept from earlier in this tab may be stale (hub restarted): check it once. */
async function revalidateToken() {
  if (!token) return;
  try {
    const { res } = await request('/api/login', { token }, token);
    if (res.status === 401 || res.status === 403) {
      setToken('');
      toast('the stored operator token was refused; log in again', 'error');
    }
  } catch { /* hub unreachable: keep the token, the SSE indicator tells the story */ }
}

// ---------------------------------------------------------------- connection

let source = null;
let retryTimer = 0;

function setConn(live) {
  setText($('#conn'), live ? 'live' : 'reconnecting');
  $('#conn').className = `conn ${live ? 'up' : 'down'}`;
  document.body.classList.toggle('stale', !live);
}

function connect() {
  clearTimeout(retryTimer);
  source = new EventSource('/api/events');
  source.onopen = () => setConn(true);
  source.onerror = () => {
    setConn(false);
    // EventSource retries by itself unless the server answered with an error status.
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      retryTimer = setTimeout(connect, RETRY_MS);
    }
  };
  source.addEventListener('state', (ev) => {
    setConn(true);
    safely(() => render(JSON.parse(ev.data)));
  });
}

async function loadSnapshot() {
  try {
    const res = await fetch('/api/state', { cache: 'no-store' });
    const state = res.ok ? await res.json() : null;
    if (state && !lastState) render(state); // an SSE event may already have arrived
  } catch { /* the event stream will bring it */ }
}

// ---------------------------------------------------------------- render

function render(state) {
  lastState = state;
  const hub = state.hub || {};
  safely(renderHub, hub, state.at);
  safely(renderMembers, state.members || []);
  safely(renderVerifyMembers, state.members || []);
  safely(renderRates, state.rates || {});
  safely(renderRecent, state.recent || []);
  safely(renderBanks, hub, state.banks || []);
  updateControls();
}

function renderHub(hub, at) {
  setText($('#hub-address'), hub.address || '—');
  setText($('#hub-mode'), hub.mode || '—');
  $('#hub-mode').classList.toggle('warn', !!hub.mode && hub.mode !== 'dev'); // not a dev hub: stand out
  $('#hub-sim').hidden = !hub.simulator;
  setText($('#hub-at'), timePart(at));
}

/** Reconcile a keyed list of children: reuse nodes by key, keep order, drop the rest. */
function reconcile(container, items, keyOf, find, create, fill) {
  const keep = new Set();
  items.forEach((item, i) => {
    const key = keyOf(item);
    const node = find(key) || create(key);
    if (container.children[i] !== node) container.insertBefore(node, container.children[i] || null);
    fill(node, item);
    keep.add(node);
  });
  for (const node of Array.from(container.children)) if (!keep.has(node)) node.remove();
}

// ---- members

function renderMembers(members) {
  const tbody = $('#members tbody');
  reconcile(tbody, members, (m) => m.code,
    (code) => tbody.querySelector(`tr[data-code="${CSS.escape(code)}"]`),
    memberRow, fillMemberRow);
}

function memberRow(code) {
  const reason = el('input', { class: 'reason', type: 'text', placeholder: 'reason', title: `reason (default: ${DEFAULT_SUSPEND_REASON})` });
  const suspend = el('button', { class: 'suspend', type: 'button', text: 'suspend' });
  const resume = el('button', { class: 'resume', type: 'button', text: 'resume' });
  const tr = el('tr', { dataset: { code } },
    el('td', { class: 'code mono', text: code }),
    ...['name', 'status', 'roles', 'subscriptions', 'circuit', 'in-flight num', 'today num', 'not-found num']
      .map((c) => el('td', { class: c })),
    el('td', { class: 'actions' }, reason, suspend, resume));
  suspend.addEventListener('click', () => changeStatus(tr, 'SUSPENDED'));
  resume.addEventListener('click', () => changeStatus(tr, 'ACTIVE'));
  reason.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') changeStatus(tr, 'SUSPENDED'); });
  return tr;
}

/** Put text in a cell as a coloured badge; the cell's textContent stays exactly `text`. */
function badgeCell(td, text, variant) {
  const badge = td.firstElementChild || td.appendChild(el('span'));
  setText(badge, text);
  badge.className = `badge ${variant}`;
}

function fillMemberRow(tr, m) {
  const status = m.status || '';
  const circuit = m.circuit || '';
  tr.dataset.status = status;
  setText($('.name', tr), m.name || '');
  badgeCell($('.status', tr), status || '—', `st-${status.toLowerCase()}`);
  setText($('.roles', tr), (m.roles || []).join(', ') || '—');
  const subs = (m.subscriptions || []).map((s) => `${s.service} (${s.role})`);
  setText($('.subscriptions', tr), subs.join(', ') || '—');
  badgeCell($('.circuit', tr), circuit || '—', `cb-${(circuit || 'none').toLowerCase()}`);
  setText($('.in-flight', tr), m.in_flight ?? '—');
  // Usage today (UsageService): verifications, and the share answered SLIP_NOT_FOUND.
  setText($('.today', tr), m.today ?? '—');
  const ratio = m.today ? `${(100 * (m.not_found_ratio || 0)).toFixed(1)}%` : '—';
  setText($('.not-found', tr), ratio);
  tr.classList.toggle('circuit-open', circuit === 'OPEN');
  tr.classList.toggle('circuit-half-open', circuit === 'HALF_OPEN');
  tr.classList.toggle('inactive', status !== 'ACTIVE');
}

function changeStatus(tr, status) {
  const code = tr.dataset.code;
  const input = $('input.reason', tr);
  const reason = status === 'SUSPENDED' ? (input.value.trim() || DEFAULT_SUSPEND_REASON) : RESUME_REASON;
  withBusy(tr, async () => {
    try {
      const data = await post(`/api/members/${encodeURIComponent(code)}/status`, { status, reason });
      if (data.member) fillMemberRow(tr, data.member);
      input.value = '';
      toast(`member ${code}: now ${(data.member && data.member.status) || status}`);
    } catch (err) { toast(`member ${code}: ${errText(err)}`, 'error'); }
  });
}

// ---- charts and the issuer table

function renderRates(rates) {
  const seconds = rates.seconds || [];
  const issuers = rates.issuers || {};
  const codes = sortIssuers(Object.keys(issuers));
  codes.forEach(colourFor); // assign colours in a stable, sorted order
  const rateSeries = codes.map((c) => ({ colour: colourFor(c), values: (issuers[c].rate || []).map((v) => v ?? 0) }));
  const latencySeries = codes.flatMap((c) => [
    { colour: colourFor(c), values: issuers[c].p50_ms || [], gaps: true },
    { colour: colourFor(c), values: issuers[c].p99_ms || [], gaps: true, dashed: true },
  ]);
  drawChart($('#rate-chart'), seconds, rateSeries);
  drawChart($('#latency-chart'), seconds, latencySeries);
  for (const legend of $$('.legend')) renderLegend(legend, codes);
  renderIssuerTable(codes, issuers);
}

function renderLegend(container, codes) {
  container.replaceChildren(...codes.map((c) => el('span', { class: 'item' },
    el('i', { class: 'swatch', style: `background:${colourFor(c)}` }), issuerLabel(c))));
}

function renderIssuerTable(codes, issuers) {
  const rows = codes.map((c) => {
    const s = issuers[c];
    return el('tr', { dataset: { issuer: c } },
      el('td', { class: 'issuer' }, el('i', { class: 'swatch', style: `background:${colourFor(c)}` }), issuerLabel(c)),
      el('td', { class: 'rate num', text: last(s.rate) ?? 0 }),
      el('td', { class: 'p50 num', text: fmt(last(s.p50_ms)) }),
      el('td', { class: 'p99 num', text: fmt(last(s.p99_ms)) }),
      el('td', { class: 'errors num', text: last(s.errors) ?? 0 }));
  });
  if (!rows.length) rows.push(el('tr', {}, el('td', { class: 'empty', colSpan: 5, text: 'no traffic yet' })));
  $('#issuer-rates tbody').replaceChildren(...rows);
}

/** Smallest "nice" number (1, 2, 2.5, 5 x 10^n) at or above v. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].find((m) => v <= m * p + 1e-9) * p;
}

const tickLabel = (v) => String(Math.round(v * 100) / 100);

/** Size the backing store to the CSS size times devicePixelRatio; returns a cleared context. */
function prepareCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300; const h = canvas.clientHeight || 180;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr); // resizing clears it
  if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

/**
 * A line chart over the last WINDOW_S seconds ending at the newest second.
 * series: [{colour, values (aligned with seconds), dashed?, gaps? (null = pen up)}]
 */
function drawChart(canvas, seconds, series) {
  const { ctx, w, h } = prepareCanvas(canvas);
  const css = getComputedStyle(canvas);
  const font = `11px ${css.fontFamily}`;
  const ink = css.getPropertyValue('--chart-ink').trim() || '#64748b';
  const grid = css.getPropertyValue('--chart-grid').trim() || '#e2e8f0';
  const box = { left: 44, right: w - 10, top: 8, bottom: h - 20 };
  const now = last(seconds) ?? Math.floor(Date.now() / 1000);
  const x0 = now - WINDOW_S;
  const xOf = (s) => box.left + ((s - x0) / WINDOW_S) * (box.right - box.left);

  let max = 0;
  for (const s of series) for (const v of s.values) if (v != null && v > max) max = v;
  const yMax = niceCeil(max);
  const yOf = (v) => box.bottom - (v / yMax) * (box.bottom - box.top);

  // grid, y ticks (4 intervals) and x ticks every 15 s
  Object.assign(ctx, { font, lineWidth: 1, fillStyle: ink, strokeStyle: grid, textAlign: 'right', textBaseline: 'middle' });
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    const y = Math.round(yOf(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(box.left, y); ctx.lineTo(box.right, y); ctx.stroke();
    ctx.fillText(tickLabel(v), box.left - 6, y);
  }
  Object.assign(ctx, { textAlign: 'center', textBaseline: 'top' });
  for (let ago = WINDOW_S; ago >= 0; ago -= 15) {
    const x = Math.round(xOf(now - ago)) + 0.5;
    ctx.beginPath(); ctx.moveTo(x, box.top); ctx.lineTo(x, box.bottom); ctx.stroke();
    ctx.fillText(ago === 0 ? 'now' : `-${ago}s`, Math.min(x, box.right - 12), box.bottom + 5);
  }

  if (!seconds.length || !series.length) {
    ctx.textBaseline = 'middle';
    return ctx.fillText('no data yet', (box.left + box.right) / 2, (box.top + box.bottom) / 2);
  }
  ctx.save();
  ctx.beginPath(); ctx.rect(box.left, box.top - 2, box.right - box.left, box.bottom - box.top + 4); ctx.clip();
  for (const s of series) drawLine(ctx, s, seconds, xOf, yOf);
  ctx.restore();
}

function drawLine(ctx, s, seconds, xOf, yOf) {
  Object.assign(ctx, { strokeStyle: s.colour, fillStyle: s.colour, lineWidth: 1.75, lineJoin: 'round' });
  ctx.setLineDash(s.dashed ? [5, 4] : []);
  ctx.beginPath();
  let penDown = false;
  seconds.forEach((sec, i) => {
    const v = s.values[i];
    if (v == null) { penDown = false; return; }
    const x = xOf(sec); const y = yOf(v);
    if (penDown) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    // a point with gaps on both sides would be invisible as a line: mark it with a dot
    if (!penDown && s.values[i + 1] == null) ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    penDown = true;
  });
  ctx.stroke();
  ctx.setLineDash([]);
}

// ---- recent verifications

function renderRecent(recent) {
  const seqs = recent.map((r) => r.seq);
  const previous = lastSeq;
  lastSeq = seqs.length ? Math.max(lastSeq ?? -Infinity, ...seqs) : lastSeq;
  const rows = recent.map((r) => {
    const ok = r.status === 'OK';
    return el('tr', { dataset: { seq: r.seq }, class: previous != null && r.seq > previous ? 'new' : '' },
      el('td', { class: 'at mono', text: timePart(r.at) }),
      el('td', { class: 'requester mono', text: r.requester || '—' }),
      el('td', { class: 'issuer mono', text: r.issuer ? r.issuer : '(none)' }),
      el('td', { class: 'trans-ref mono', text: r.trans_ref || '—' }),
      el('td', { class: `status ${ok ? 'ok' : 'bad'}`, text: r.status || '—' }),
      el('td', { class: 'reason', text: r.reason || '' }),
      el('td', { class: `verdict ${r.verdict === 'VALID' ? 'ok' : r.verdict ? 'warn' : ''}`, text: r.verdict || '' }),
      el('td', { class: 'latency num', text: fmt(r.latency_ms) }));
  });
  if (!rows.length) rows.push(el('tr', {}, el('td', { class: 'empty', colSpan: 8, text: 'no verifications yet' })));
  $('#recent tbody').replaceChildren(...rows);
}

// ---- simulated banks and their faults

function renderBanks(hub, banks) {
  const section = $('#banks');
  const none = !hub.simulator || !banks.length;
  $('.banks-none', section).hidden = !none;
  const list = $('.bank-list', section);
  list.hidden = none;
  if (none) return;
  reconcile(list, banks, (b) => b.code,
    (code) => list.querySelector(`.bank[data-bank="${CSS.escape(code)}"]`),
    bankCard, fillBank);
}

function bankCard(code) {
  const num = (name, attrs) => el('input', { name, type: 'number', ...attrs });
  const check = (name) => el('label', { class: 'check' }, el('input', { name, type: 'checkbox' }), ` ${name}`);
  const card = el('div', { class: 'bank', dataset: { bank: code } },
    el('div', { class: 'bank-head' },
      el('span', { class: 'code mono', text: code }),
      el('span', { class: 'name' }),
      el('span', { class: 'listening' })),
    el('div', { class: 'bank-terms' }),
    el('form', { class: 'fault-form' },
      el('div', { class: 'fault-inputs' },
        el('label', {}, 'latency ', num('latency_ms', { min: 0, step: 50 }), ' ms'),
        el('label', {}, 'error rate ', num('error_rate', { min: 0, max: 1, step: 0.05 })),
        check('hang'), check('refuse')),
      el('div', { class: 'fault-foot' },
        el('span', { class: 'in-force' }),
        el('button', { class: 'apply primary', type: 'submit', text: 'Apply' }),
        el('button', { class: 'clear', type: 'button', text: 'Clear' }))));
  $('form', card).addEventListener('submit', (ev) => { ev.preventDefault(); applyFaults(card, readFaults(card)); });
  $('button.clear', card).addEventListener('click', () =>
    applyFaults(card, { latency_ms: 0, error_rate: 0, hang: false, refuse: false }));
  return card;
}

function fillBank(card, bank) {
  setText($('.name', card), bank.name || '');
  const pending = bank.pending_ms > 0 ? `pending ${bank.pending_ms / 1000} s` : 'settles at once';
  setText($('.bank-terms', card), `keeps slips ${bank.retention_days || '?'} days · ${pending}`);
  const listening = $('.listening', card);
  setText(listening, bank.issuer_listening ? 'listening' : 'not listening');
  listening.className = `listening ${bank.issuer_listening ? 'ok' : 'bad'}`;
  setInForce(card, bank.faults || {});
  // Fill the inputs once only: later events must not overwrite what the operator is typing.
  if (card.dataset.filled !== '1') {
    fillFaultInputs(card, bank.faults || {});
    card.dataset.filled = '1';
  }
}

/** {latency_ms: 200, hang: true, ...} -> "latency 200 ms, hang" (or "none"). */
const describeFaults = (f) => [f.latency_ms > 0 && `latency ${f.latency_ms} ms`,
  f.error_rate > 0 && `error rate ${f.error_rate}`, f.hang && 'hang', f.refuse && 'refuse']
  .filter(Boolean).join(', ') || 'none';

function setInForce(card, faults) {
  const text = describeFaults(faults);
  setText($('.in-force', card), `in force: ${text}`);
  $('.in-force', card).classList.toggle('active', text !== 'none');
}

function fillFaultInputs(card, f) {
  $('input[name=latency_ms]', card).value = String(f.latency_ms ?? 0);
  $('input[name=error_rate]', card).value = String(f.error_rate ?? 0);
  $('input[name=hang]', card).checked = !!f.hang;
  $('input[name=refuse]', card).checked = !!f.refuse;
}

/** The faults typed in a card; NaN marks a field that is not a number. */
function readFaults(card) {
  const latency = Number.parseInt($('input[name=latency_ms]', card).value || '0', 10);
  const rate = Number.parseFloat($('input[name=error_rate]', card).value || '0');
  return { latency_ms: Math.max(0, latency), error_rate: Math.min(1, Math.max(0, rate)),
    hang: $('input[name=hang]', card).checked, refuse: $('input[name=refuse]', card).checked };
}

function applyFaults(card, faults) {
  const code = card.dataset.bank;
  if (Number.isNaN(faults.latency_ms) || Number.isNaN(faults.error_rate)) {
    toast(`bank ${code}: latency and error rate must be numbers`, 'error');
  } else withBusy(card, async () => {
    try {
      const data = await post(`/api/banks/${encodeURIComponent(code)}/faults`, faults);
      const now = data.faults || faults;
      fillFaultInputs(card, now); // the inputs follow the state again after a success
      setInForce(card, now);
      toast(`bank ${code}: faults ${describeFaults(now)}`);
    } catch (err) { toast(`bank ${code}: ${errText(err)}`, 'error'); }
  });
}

// ---- verify a slip

/** Fill the requester select with ACTIVE members, keeping the operator's choice. */
function renderVerifyMembers(members) {
  const select = $('#verify select[name=member]');
  const active = members.filter((m) => m.status === 'ACTIVE');
  const signature = active.map((m) => `${m.code}\u0000${m.name}`).join('\u0001');
  if (select.dataset.signature === signature) return;
  select.dataset.signature = signature;
  const chosen = select.value;
  select.replaceChildren(...active.map((m) => el('option', { value: m.code, text: `${m.code} · ${m.name}` })));
  if (active.some((m) => m.code === chosen)) select.value = chosen;
}

function submitVerify(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const member = form.elements.namedItem('member').value;
  const qrText = form.elements.namedItem('qr_text').value.trim();
  const file = form.elements.namedItem('image').files[0];
  if (!member) return toast('choose the requesting member (only ACTIVE members can verify)', 'error');
  if (!qrText && !file) return toast('paste the QR text or choose a slip image', 'error');
  const body = new FormData();
  body.append('member', member);
  if (qrText) body.append('qr_text', qrText);
  else body.append('image', file, file.name); // the hub reads the image (VerifyRequest.slip_image)
  withBusy(form, async () => {
    try {
      const data = await post('/api/verify', body);
      renderVerifyResult(data, qrText);
      if (data.ok) {
        const verdict = shortVerdict(data.answer.verdict);
        toast(`verified: ${verdict || 'no verdict'}`, verdict === 'VALID' ? 'ok' : 'warn');
      } else toast(`verification failed: ${errorInfo(data.error).reason || data.error.code}`, 'error');
    } catch (err) {
      renderVerifyResult({ ok: false, error: { code: err.reason || '', message: err.message }, httpStatus: err.httpStatus });
      toast(`verify: ${err.message}`, 'error');
    }
  });
}

/** Append a "label: value" pair to a <dl>, skipping empty values. */
function addField(dl, label, value, cls = '') {
  if (value == null || value === '') return;
  dl.append(el('dt', { text: label }), el('dd', { class: cls, text: String(value) }));
}

// Answers come as proto3 JSON (the JSON API's shape): enums by their full names,
// int64 amounts as strings of satang, times in RFC 3339 UTC; shown here for people.
const shortVerdict = (v) => (v || '').replace(/^VERDICT_/, '');

/** Money (satang as a string) as baht: {"satang": "3252810"} -> "32,528.10 THB". */
function baht(money) {
  if (!money || money.satang == null) return '';
  const satang = BigInt(money.satang);
  const abs = satang < 0n ? -satang : satang;
  const whole = (abs / 100n).toLocaleString('en-US');
  return `${satang < 0n ? '-' : ''}${whole}.${String(abs % 100n).padStart(2, '0')} ${money.currency || 'THB'}`;
}

/** An RFC 3339 instant in Bangkok time, "2026-12-04 09:15:02". */
const inBangkok = (iso) => (iso ? new Date(iso).toLocaleString('sv-SE', { timeZone: 'Asia/Bangkok' }) : '');

const party = (p) => (p ? [p.name || p.displayName, (p.account || p.proxy || {}).value].filter(Boolean).join(' · ') : '');

/** The google.rpc.ErrorInfo of a Connect error JSON: {reason, metadata: {code, ...}}. */
function errorInfo(error) {
  const info = ((error && error.details) || []).find((d) => d.type === 'google.rpc.ErrorInfo');
  return (info && info.debug) || {};
}

function renderVerifyResult(r, qrText = '') {
  const box = $('#verify-result');
  const a = r.answer || {};
  const verdict = shortVerdict(a.verdict);
  const kind = !r.ok ? 'bad' : verdict === 'VALID' ? 'good' : 'warn';
  box.hidden = false;
  box.className = `result ${kind}`;
  box.dataset.ok = String(!!r.ok);
  const dl = el('dl');
  if (r.ok) {
    const t = a.transaction || {};
    const seen = Number((a.duplicate || {}).previousCount || 0);
    box.replaceChildren(
      el('div', { class: 'result-head' }, el('span', { class: 'verdict', text: verdict || '—' }),
        el('span', { class: 'muted', text: a.requestId ? `request ${a.requestId}` : '' })),
      dl);
    dl.append(el('dt', { text: 'trans ref' }), el('dd', { class: 'trans-ref mono', text: t.transRef || '—' }));
    addField(dl, 'amount', baht(t.amount), 'amount');
    addField(dl, 'at', inBangkok(t.transTime));
    addField(dl, 'from', [t.sendingBank, party(t.sender)].filter(Boolean).join(' · '));
    addField(dl, 'to', [t.receivingBank, party(t.receiver)].filter(Boolean).join(' · '));
    addField(dl, 'seen before', seen ? `${seen} time(s): possible re-use` : 'never', seen ? 'warn-text' : '');
    addField(dl, 'QR text', qrText, 'mono qr');
    if (Array.isArray(a.checks) && a.checks.length) box.append(renderChecks(a.checks));
  } else {
    const error = r.error || {};
    const info = errorInfo(error);
    const label = info.reason || error.code || 'REJECTED';
    box.replaceChildren(el('div', { class: 'result-head' }, el('span', { class: 'verdict', text: label })), dl);
    addField(dl, 'status', error.code || (r.httpStatus ? `HTTP ${r.httpStatus}` : ''));
    addField(dl, 'outcome code', (info.metadata || {}).code);
    addField(dl, 'message', error.message);
    dl.append(el('dt', { text: 'trans ref' }), el('dd', { class: 'trans-ref mono', text: '—' }));
  }
}

function renderChecks(checks) {
  return el('ul', { class: 'checks' }, ...checks.map((c) => {
    const passed = c.outcome === 'CHECK_OUTCOME_PASS';
    const outcome = (c.outcome || '').replace(/^CHECK_OUTCOME_/, '');
    return el('li', { class: passed ? 'pass' : 'fail' },
      el('span', { class: 'mark', text: passed ? '✓' : '✗' }),
      el('span', { class: 'check-name', text: (c.check || '').replace(/^CHECK_/, '') }),
      el('span', { class: 'muted', text: ` ${outcome}: expected ${c.expected || '—'}, saw ${c.observed || '—'}` }));
  }));
}

// ---------------------------------------------------------------- start

function start() {
  $('#login').addEventListener('submit', submitLogin);
  $('#logout').addEventListener('click', logout);
  $('#verify').addEventListener('submit', submitVerify);
  let pending = false; // redraw the charts at most once per frame while resizing
  window.addEventListener('resize', () => {
    if (pending || !lastState) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; safely(renderRates, lastState.rates || {}); });
  });
  setConn(false);
  renderMode();
  safely(renderRates, {}); // empty axes until the first snapshot
  loadSnapshot();
  connect();
  revalidateToken();
}

document.addEventListener('DOMContentLoaded', start);
