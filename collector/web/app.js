// The collector's dashboard: loop status and targets, ranked findings, the
// fleet's agents and charts of key series, refreshed by polling the API.
// Everything from the API is put on the page as text, never as HTML.

import { ApiError, apiGet, getToken, setToken } from './api.js';
import { CHARTS, Chart, RANGES } from './charts.js';
import { formatAgo, formatClock, formatValue } from './format.js';

const REFRESH_MS = 5000;
const CHART_REFRESH_MS = 15000;
const RANGE_KEY = 'strata.range';
const STALE_S = 30;
const LOST_S = 300;

const $ = (sel) => document.querySelector(sel);

// h('td', {class: 'num'}, 'text', child): an element with attributes and
// children; strings become text nodes.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) {
      continue;
    }
    if (k === 'class') {
      el.className = v;
    } else if (k.startsWith('on')) {
      el.addEventListener(k.slice(2), v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children.flat(Infinity)) {
    if (c !== undefined && c !== null && c !== false) {
      el.append(c instanceof Node ? c : String(c));
    }
  }
  return el;
}

const state = {
  range: '1h',
  agents: [],
  agentsAt: 0,
  findingsKey: '',
  openFindings: new Set(),
  charts: [],
  errors: new Map(),
};

// ---- banner: the first problem of the last refresh ----

function showErrors() {
  const banner = $('#banner');
  const errs = [...state.errors.values()];
  if (errs.length === 0) {
    banner.hidden = true;
    document.body.classList.remove('stale');
    return;
  }
  const auth = errs.find((e) => e.needsToken);
  banner.replaceChildren();
  if (auth) {
    banner.append(
      auth.status === 401
        ? `The API needs a bearer token (${auth.message}): enter it under “API token”.`
        : `The token was refused (${auth.message}).`,
    );
    $('#token-form').classList.add('attention');
  } else {
    const e = errs[0];
    banner.append(`${e.path}: ${e.status ? `HTTP ${e.status}: ` : ''}${e.message}`);
  }
  banner.hidden = false;
  document.body.classList.toggle(
    'stale',
    errs.some((e) => e.status === 0),
  );
}

async function guarded(name, fn) {
  try {
    await fn();
    state.errors.delete(name);
    return true;
  } catch (e) {
    state.errors.set(name, e instanceof ApiError ? e : new ApiError(0, String(e), name));
    return false;
  }
}

// ---- loop status and targets ----

const LOOP_TEXT = {
  PERFORMANCE_OPTIMIZED: 'performance optimized',
  OPTIMIZING: 'optimizing',
  MAX_ITERATIONS_REACHED: 'max iterations reached',
};

function targetCompare(t) {
  if (t.direction === 'at_least') {
    return '≥';
  }
  return t.name === 'error_rate' ? '<' : '≤';
}

function renderTarget(t) {
  const noData = t.value === null || t.value === undefined;
  const cls = noData ? 'nodata' : t.met ? 'met' : 'unmet';
  return h(
    'div',
    { class: `target ${cls}`, 'data-name': t.name, 'data-met': String(!!t.met) },
    h(
      'div',
      { class: 'target-name' },
      h('span', {}, t.name.replaceAll('_', ' ')),
      h('span', { class: 'scope' }, t.scope),
    ),
    h('div', { class: 'target-value' }, formatValue(t.value, t.unit)),
    h(
      'div',
      { class: 'target-goal' },
      h('span', { class: 'mark', 'aria-hidden': 'true' }, noData ? '·' : t.met ? '✓' : '✗'),
      ` target ${targetCompare(t)} ${formatValue(t.target, t.unit)}`,
    ),
  );
}

function renderStatus(st) {
  const loop = $('#loop');
  loop.dataset.status = st.status || '';
  $('#loop-status').textContent = LOOP_TEXT[st.status] || st.status || 'unknown';
  $('#loop-status').title = st.status || '';
  $('#loop-iteration').textContent =
    st.iteration !== undefined
      ? `iteration ${st.iteration}${st.max_iterations ? ` of ${st.max_iterations}` : ''}`
      : '';
  $('#collector-name').textContent = st.collector ? `collector ${st.collector}` : '';
  // Unmet first, then met, then those without data; the API's order within.
  const rank = (t) => (t.value === null || t.value === undefined ? 2 : t.met ? 1 : 0);
  const targets = (st.targets || []).map((t, i) => [t, i]);
  targets.sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1]);
  $('#targets').replaceChildren(
    ...(targets.length
      ? targets.map(([t]) => renderTarget(t))
      : [h('p', { class: 'empty' }, 'No targets configured.')]),
  );
  const f = st.findings || {};
  const order = ['open', 'dispatched', 'validating', 'resolved', 'ineffective'];
  $('#finding-counts').replaceChildren(
    ...order.map((k) =>
      h('span', { class: `count ${k}`, 'data-count': k }, h('b', {}, String(f[k] ?? 0)), ` ${k}`),
    ),
  );
}

async function refreshStatus() {
  try {
    renderStatus(await apiGet('/v1/status'));
  } catch (e) {
    if (e instanceof ApiError && e.status === 503) {
      renderStatus({ status: 'ENGINE_OFF', targets: [] });
      $('#loop-status').textContent = 'engine off';
      return;
    }
    throw e;
  }
}

// ---- findings ----

// Pretty JSON with fractions cut to 6 significant digits for reading.
function jsonBlock(v) {
  const round = (k, x) =>
    typeof x === 'number' && !Number.isInteger(x) ? Number(x.toPrecision(6)) : x;
  return h('pre', { class: 'json' }, JSON.stringify(v, round, 2));
}

function implementationBlock(impl) {
  if (impl === null || impl === undefined) {
    return h('p', { class: 'muted' }, 'no implementation payload');
  }
  if (typeof impl !== 'object' || Array.isArray(impl)) {
    return jsonBlock(impl);
  }
  // Multi-line strings (SQL, configuration, code) read best as they are.
  return h(
    'dl',
    { class: 'impl' },
    Object.entries(impl).map(([k, v]) => [
      h('dt', {}, k),
      h(
        'dd',
        {},
        typeof v === 'string'
          ? h('pre', { class: 'code' }, v)
          : typeof v === 'object'
            ? jsonBlock(v)
            : String(v),
      ),
    ]),
  );
}

function findingLink(id) {
  return h(
    'a',
    {
      href: `#finding-${id}`,
      class: 'finding-link',
      onclick: (ev) => {
        ev.preventDefault();
        const target = document.getElementById(`finding-${id}`);
        if (target) {
          target.open = true;
          state.openFindings.add(id);
          target.scrollIntoView({ behavior: 'smooth', block: 'center' });
          target.classList.add('flash');
          setTimeout(() => target.classList.remove('flash'), 1500);
        }
      },
    },
    id,
  );
}

function scoreText(s) {
  if (!s) {
    return '';
  }
  const n = (x) => (Number.isFinite(x) ? Number(x.toFixed(2)) : x);
  return (
    `${n(s.total)} = ${s.severity} ${n(s.severity_weight)} × (1 + ${n(s.distance_past_threshold)})` +
    ` × (0.5 + 0.5 × ${n(s.traffic_share)}) × ${s.role} ${n(s.role_factor)}`
  );
}

function renderFinding(f) {
  const opt = f.optimization || {};
  const causes = Array.isArray(f.causes) ? f.causes : [];
  const det = h(
    'details',
    {
      class: `finding sev-${f.severity} st-${f.status}`,
      id: `finding-${f.id}`,
      'data-id': f.id,
      ontoggle: (ev) => {
        if (ev.target.open) {
          state.openFindings.add(f.id);
        } else {
          state.openFindings.delete(f.id);
        }
      },
    },
    h(
      'summary',
      {},
      h('span', { class: 'prio', title: 'priority' }, Number(f.priority ?? 0).toFixed(2)),
      h('span', { class: `sev sev-${f.severity}` }, f.severity),
      h('span', { class: 'layer' }, f.layer),
      h('span', { class: 'rule' }, f.rule),
      h('span', { class: 'entity', title: f.entity }, f.entity),
      h('span', { class: 'summary-text' }, f.summary),
      h('span', { class: `status st-${f.status}` }, f.status),
    ),
    h(
      'div',
      { class: 'finding-body' },
      h(
        'div',
        { class: 'finding-meta' },
        h('div', {}, h('span', { class: 'muted' }, 'id '), h('code', {}, f.id)),
        f.caused_by
          ? h(
              'div',
              { class: 'caused-by' },
              h('span', { class: 'muted' }, 'caused by '),
              findingLink(f.caused_by),
            )
          : null,
        causes.length
          ? h(
              'div',
              {},
              h('span', { class: 'muted' }, 'causes '),
              causes.map((c, i) => [i ? ', ' : '', findingLink(c)]),
            )
          : null,
        f.score
          ? h(
              'div',
              { class: 'score' },
              h('span', { class: 'muted' }, 'score '),
              scoreText(f.score),
            )
          : null,
      ),
      h(
        'div',
        { class: 'finding-cols' },
        h(
          'section',
          { class: 'optimization' },
          h('h3', {}, 'Optimization ', h('code', { class: 'opt-type' }, opt.type || '?')),
          implementationBlock(opt.implementation),
        ),
        h('section', { class: 'evidence' }, h('h3', {}, 'Evidence'), jsonBlock(f.evidence ?? null)),
      ),
    ),
  );
  det.open = state.openFindings.has(f.id);
  return det;
}

async function refreshFindings() {
  const ans = await apiGet('/v1/findings', { limit: 200 });
  const list = ans.findings || [];
  const key = JSON.stringify(list);
  if (key === state.findingsKey) {
    return;
  }
  state.findingsKey = key;
  const box = $('#findings');
  box.dataset.count = String(list.length);
  if (list.length === 0) {
    box.replaceChildren(
      h(
        'p',
        { class: 'empty', id: 'findings-empty' },
        'No findings: nothing needs attention right now.',
      ),
    );
    return;
  }
  box.replaceChildren(
    h(
      'div',
      { class: 'finding-head', 'aria-hidden': 'true' },
      ['priority', 'severity', 'layer', 'rule', 'entity', 'summary', 'status'].map((c) =>
        h('span', {}, c),
      ),
    ),
    ...list.map(renderFinding),
  );
}

// ---- agents ----

function agentAge(a) {
  return (a.seconds_since_last_frame ?? NaN) + (Date.now() - state.agentsAt) / 1000;
}

function seqCheck(a) {
  if (a.frames === a.seq) {
    return h('span', { class: 'ok', title: 'every frame up to seq was applied once' }, '✓ equal');
  }
  const gap = a.seq - a.frames;
  return h(
    'span',
    { class: gap > 0 && gap <= 4 ? 'warn' : 'bad', title: 'frames applied vs highest seq applied' },
    `${gap > 0 ? '−' : '+'}${Math.abs(gap)} (frames ${gap > 0 ? 'behind' : 'ahead of'} seq)`,
  );
}

function ageClass(age) {
  return age > LOST_S ? 'lost' : age > STALE_S ? 'stale' : 'live';
}

// Once a second: only the ages move, so only they are rewritten.
function tickAgents() {
  const byId = new Map(state.agents.map((a) => [a.id, a]));
  let fresh = 0;
  for (const tr of document.querySelectorAll('#agents tbody tr[data-id]')) {
    const a = byId.get(tr.dataset.id);
    if (a) {
      const age = agentAge(a);
      tr.className = ageClass(age);
      tr.querySelector('.last-seen').textContent = formatAgo(age);
      fresh += tr.className === 'live' ? 1 : 0;
    }
  }
  agentSummary(state.agents.length, fresh);
}

function agentSummary(n, fresh) {
  $('#agent-summary').textContent = n
    ? `${n} agent${n === 1 ? '' : 's'} · ${fresh} reporting in the last ${STALE_S}s`
    : '';
}

function renderAgents() {
  const rows = [...state.agents].sort((a, b) => (a.host || '').localeCompare(b.host || ''));
  const tbody = $('#agents tbody');
  if (rows.length === 0) {
    tbody.replaceChildren(
      h('tr', {}, h('td', { colspan: 9, class: 'empty' }, 'No agent has reported yet.')),
    );
    agentSummary(0, 0);
    return;
  }
  let fresh = 0;
  tbody.replaceChildren(
    ...rows.map((a) => {
      const age = agentAge(a);
      const cls = ageClass(age);
      fresh += cls === 'live' ? 1 : 0;
      return h(
        'tr',
        { class: cls, 'data-host': a.host, 'data-id': a.id },
        h(
          'td',
          { class: 'host' },
          h('span', { class: 'dot', 'aria-hidden': 'true' }),
          a.host || a.id,
        ),
        h('td', {}, a.role),
        h('td', { class: 'muted' }, a.version),
        h(
          'td',
          { class: 'last-seen', title: new Date(a.last_seen_unix_ms).toISOString() },
          formatAgo(age),
        ),
        h('td', { class: 'num' }, a.seq),
        h('td', { class: 'num' }, a.frames),
        h('td', { class: 'seq-check' }, seqCheck(a)),
        h('td', { class: `num ${a.spool_frames > 0 ? 'warn' : ''}` }, a.spool_frames ?? 0),
        h('td', { class: `num ${a.spool_dropped > 0 ? 'bad' : ''}` }, a.spool_dropped ?? 0),
      );
    }),
  );
  agentSummary(rows.length, fresh);
}

async function refreshAgents() {
  const ans = await apiGet('/v1/agents');
  state.agents = ans.agents || [];
  state.agentsAt = Date.now();
  renderAgents();
}

// ---- charts ----

async function refreshCharts() {
  const range = state.range;
  await Promise.all(
    state.charts.map((c) =>
      guarded(`chart-${c.spec.id}`, async () => {
        try {
          await c.load(range);
        } catch (e) {
          c.fail(e);
          throw e;
        }
      }),
    ),
  );
  showErrors();
}

function setRange(name) {
  if (!RANGES[name]) {
    return;
  }
  state.range = name;
  try {
    sessionStorage.setItem(RANGE_KEY, name);
  } catch {
    // not kept across reloads
  }
  for (const b of document.querySelectorAll('#range button')) {
    b.setAttribute('aria-pressed', String(b.dataset.range === name));
  }
  refreshCharts();
}

// ---- refresh loop ----

async function refresh() {
  const ok = await Promise.all([
    guarded('status', refreshStatus),
    guarded('agents', refreshAgents),
    guarded('findings', refreshFindings),
  ]);
  if (ok.every(Boolean)) {
    $('#updated').textContent = `updated ${formatClock(Date.now())}`;
  }
  showErrors();
}

function every(ms, fn) {
  setInterval(() => {
    if (!document.hidden) {
      fn();
    }
  }, ms);
}

function setupToken() {
  const form = $('#token-form');
  const input = $('#token-input');
  input.value = getToken();
  form.classList.toggle('has-token', input.value !== '');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    form.classList.toggle('has-token', input.value.trim() !== '');
    form.classList.remove('attention');
    state.findingsKey = '';
    refresh();
    refreshCharts();
  });
  $('#token-clear').addEventListener('click', () => {
    input.value = '';
    setToken('');
    form.classList.remove('has-token');
    refresh();
    refreshCharts();
  });
}

function main() {
  setupToken();
  try {
    state.range = RANGES[sessionStorage.getItem(RANGE_KEY)]
      ? sessionStorage.getItem(RANGE_KEY)
      : '1h';
  } catch {
    state.range = '1h';
  }
  state.charts = CHARTS.map((spec) => new Chart(document.getElementById(`chart-${spec.id}`), spec));
  for (const b of document.querySelectorAll('#range button')) {
    b.addEventListener('click', () => setRange(b.dataset.range));
  }
  setRange(state.range);
  refresh();
  every(REFRESH_MS, refresh);
  every(CHART_REFRESH_MS, refreshCharts);
  every(1000, tickAgents);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) {
      refresh();
      refreshCharts();
    }
  });
}

main();
