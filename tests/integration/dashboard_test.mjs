// The dashboard in headless Chromium, driven by playwright-core (run by
// dashboard_test.sh, which starts the collector and the agent). Environment:
//   DASH_URL        the collector's dashboard, http://127.0.0.1:PORT/
//   DASH_TOKEN      the API's bearer token
//   DASH_HOST       the agent's host name
//   DASH_FINDINGS   rule ids that must be listed (comma-separated; may be empty)
//   DASH_SCREENSHOT where to save the full-page screenshot
//   DASH_PROFILE    a fresh Chromium profile directory
//   CHROMIUM        the browser binary (Debian's /usr/bin/chromium)
//   PW_DIR          the directory whose node_modules holds playwright-core

import { createRequire } from 'node:module';
import path from 'node:path';

function env(name, fallback) {
  const v = process.env[name] ?? fallback;
  if (v === undefined) {
    throw new Error(`set ${name}`);
  }
  return v;
}

const URL_ = env('DASH_URL');
const TOKEN = env('DASH_TOKEN');
const HOST = env('DASH_HOST');
const FINDINGS = env('DASH_FINDINGS', '').split(',').filter(Boolean);
const SCREENSHOT = env('DASH_SCREENSHOT');
const require = createRequire(path.join(env('PW_DIR'), 'package.json'));
const { chromium } = require('playwright-core');

const CHARTS = {
  latency: ['app'],
  cache: ['api'],
  memory: [HOST],
  stability: ['closed-port', 'collector-http'],
};
const TIMEOUT = 30000;

let passed = 0;
function check(cond, what, detail = '') {
  if (!cond) {
    throw new Error(`${what}${detail ? `: ${detail}` : ''}`);
  }
  passed++;
  console.log(`ok ${passed} - ${what}`);
}

async function api(p) {
  const res = await fetch(new URL(p, URL_), { headers: { Authorization: `Bearer ${TOKEN}` } });
  if (!res.ok) {
    throw new Error(`${p}: HTTP ${res.status}`);
  }
  return res.json();
}

async function waitFor(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: TIMEOUT, polling: 200 });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}`);
  }
}

// ---- the token: asked for, taken, kept in sessionStorage, never in a URL ----

async function tokenFlow(page, requests) {
  await page.goto(URL_, { waitUntil: 'load' });
  await waitFor(page, 'the banner asking for a token', () => {
    const b = document.querySelector('#banner');
    return b && !b.hidden && /token/.test(b.textContent);
  });
  check(true, 'without a token the page loads and asks for one');
  await page.fill('#token-input', TOKEN);
  const mark = requests.length;
  await page.press('#token-input', 'Enter');
  await waitFor(page, 'the banner to go', () => document.querySelector('#banner').hidden);
  const stored = await page.evaluate(() => sessionStorage.getItem('strata.token'));
  check(stored === TOKEN, 'the token is kept in sessionStorage');
  await page.reload({ waitUntil: 'load' });
  await waitFor(
    page,
    'the agents after a reload',
    (h) => !!document.querySelector(`#agents tr[data-host="${h}"]`),
    HOST,
  );
  check(true, 'after a reload the token from sessionStorage still works');
  const leaked = requests.filter((r) => r.url.includes(TOKEN));
  check(
    leaked.length === 0,
    'the token never appears in a URL',
    leaked.map((r) => r.url).join(' '),
  );
  const apiReqs = requests.slice(mark).filter((r) => new URL(r.url).pathname.startsWith('/v1/'));
  check(
    apiReqs.length > 0 && apiReqs.every((r) => r.auth === `Bearer ${TOKEN}`),
    'every API request after entering the token carries Authorization: Bearer',
  );
}

// ---- agents, status and targets ----

async function checkAgents(page) {
  const row = await page.$eval(`#agents tr[data-host="${HOST}"]`, (tr) => ({
    cells: [...tr.cells].map((c) => c.textContent.trim()),
    cls: tr.className,
  }));
  const [host, role, , lastSeen, seq, frames, seqCheck, backlog, dropped] = row.cells;
  check(
    host === HOST && role === 'app',
    'the agents table lists the agent with its role',
    row.cells.join(' | '),
  );
  check(
    /^\d+s ago$/.test(lastSeen) && row.cls === 'live',
    'the agent was seen seconds ago',
    lastSeen,
  );
  check(Number(seq) >= 2 && Number(frames) >= 1, 'seq and frames are shown', `${seq} ${frames}`);
  check(
    /✓ equal|−[1-4] \(frames behind seq\)/.test(seqCheck),
    'frames == seq check (in-flight gap at most 4)',
    seqCheck,
  );
  check(
    /^\d+$/.test(backlog) && dropped === '0',
    'backlog and dropped are shown',
    `${backlog} ${dropped}`,
  );
}

async function checkStatus(page) {
  const st = await api('/v1/status');
  await waitFor(
    page,
    'the loop status',
    () => document.querySelector('#loop').dataset.status !== '',
  );
  const loop = await page.$eval('#loop', (el) => ({
    status: el.dataset.status,
    text: el.querySelector('#loop-status').textContent,
    iteration: el.querySelector('#loop-iteration').textContent,
  }));
  check(
    ['PERFORMANCE_OPTIMIZED', 'OPTIMIZING', 'MAX_ITERATIONS_REACHED'].includes(loop.status),
    `the loop status is shown (${loop.status}: "${loop.text}")`,
  );
  check(/^iteration \d+/.test(loop.iteration), `the iteration is shown ("${loop.iteration}")`);
  const targets = await page.$$eval('#targets .target', (els) =>
    els.map((e) => ({
      name: e.dataset.name,
      cls: e.className,
      value: e.querySelector('.target-value').textContent,
    })),
  );
  check(
    targets.length === st.targets.length && targets.length > 0,
    `every target is shown (${targets.length} of ${st.targets.length})`,
  );
  const unmet = st.targets.filter((t) => !t.met && t.value !== null).length;
  check(
    targets.filter((t) => t.cls.includes('unmet')).length === unmet && unmet > 0,
    `unmet targets are styled unmet (${unmet})`,
  );
  const p95 = targets.find((t) => t.name === 'response_time_p95' && t.cls.includes('unmet'));
  check(
    p95 && / ms$/.test(p95.value),
    'response_time_p95 is unmet with its measured value',
    JSON.stringify(p95),
  );
  check(
    targets.some((t) => t.cls.includes(' met')),
    'met targets are styled met',
  );
}

// ---- findings ----

async function checkFindings(page) {
  const list = (await api('/v1/findings?limit=200')).findings;
  if (list.length === 0) {
    await waitFor(
      page,
      'the empty findings state',
      () => !!document.querySelector('#findings-empty'),
    );
    check(FINDINGS.length === 0, 'the empty findings state is shown');
    return;
  }
  await waitFor(
    page,
    'the findings list',
    (n) => document.querySelectorAll('#findings details.finding').length === n,
    list.length,
  );
  const rows = await page.$$eval('#findings details.finding', (els) =>
    els.map((d) => ({
      id: d.dataset.id,
      prio: Number(d.querySelector('.prio').textContent),
      rule: d.querySelector('.rule').textContent,
      sev: d.querySelector('.sev').textContent,
    })),
  );
  check(rows.length === list.length, `every finding is listed (${rows.length})`);
  check(
    rows.every((r, i) => i === 0 || rows[i - 1].prio >= r.prio),
    'findings are ranked by priority',
    rows.map((r) => r.prio).join(' '),
  );
  for (const rule of FINDINGS) {
    check(
      rows.some((r) => r.rule === rule),
      `finding ${rule} is listed`,
    );
  }
  const f = list.find((x) => x.rule === (FINDINGS[0] ?? list[0].rule)) ?? list[0];
  const sel = `#finding-${f.id}`;
  await page.click(`${sel} > summary`);
  await waitFor(page, 'the finding to expand', (s) => document.querySelector(s).open, sel);
  const body = await page.$eval(sel, (d) => ({
    evidence: d.querySelector('.evidence pre').textContent,
    type: d.querySelector('.opt-type').textContent,
    impl: d.querySelector('.optimization').textContent,
    visible: d.querySelector('.evidence pre').getBoundingClientRect().height > 0,
  }));
  let evidence = null;
  try {
    evidence = JSON.parse(body.evidence);
  } catch {
    evidence = null;
  }
  check(
    body.visible && evidence !== null && typeof evidence === 'object',
    `${f.rule}: expanding shows the evidence JSON`,
  );
  check(
    body.type === f.optimization.type,
    `${f.rule}: the optimization type is shown (${body.type})`,
  );
  const implKeys = Object.keys(f.optimization.implementation ?? {});
  check(
    implKeys.length > 0 && implKeys.every((k) => body.impl.includes(k)),
    `${f.rule}: the implementation is shown (${implKeys.join(', ')})`,
    body.impl.slice(0, 400),
  );
  const caused = list.find((x) => x.caused_by);
  if (caused) {
    const link = await page.$(
      `#finding-${caused.id} a.finding-link[href="#finding-${caused.caused_by}"]`,
    );
    check(link !== null, `${caused.rule}: caused_by links to ${caused.caused_by}`);
  }
}

// ---- charts ----

async function chartState(page, id) {
  return page.$eval(`#chart-${id}`, (el) => {
    const c = el.querySelector('canvas');
    let inked = 0;
    let drawn = 0; // pixels in the first series' colour, #2563eb
    if (c && c.width > 0 && c.height > 0) {
      const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < px.length; i += 4) {
        inked += px[i + 3] > 0 ? 1 : 0;
        const near = Math.abs(px[i] - 37) + Math.abs(px[i + 1] - 99) + Math.abs(px[i + 2] - 235);
        drawn += px[i + 3] > 200 && near < 60 ? 1 : 0;
      }
    }
    return {
      range: el.dataset.range,
      loads: Number(el.dataset.loads || 0),
      points: Number(el.dataset.points || 0),
      canvas: c ? [c.width, c.height, c.clientWidth, c.clientHeight] : null,
      inked,
      drawn,
      image: c ? c.toDataURL() : '',
      legend: [...el.querySelectorAll('.u-legend .u-series .u-label')].map((l) => l.textContent),
    };
  });
}

async function checkCharts(page) {
  for (const [id, labels] of Object.entries(CHARTS)) {
    await waitFor(
      page,
      `chart ${id} with data`,
      (i) => {
        const el = document.getElementById(`chart-${i}`);
        return (
          Number(el.dataset.loads) >= 1 &&
          Number(el.dataset.points) > 0 &&
          !!el.querySelector('canvas')
        );
      },
      id,
    );
    const s = await chartState(page, id);
    check(
      s.canvas && s.canvas.every((v) => v > 0),
      `chart ${id}: uPlot drew a canvas (${s.canvas})`,
    );
    check(s.inked > 1000, `chart ${id}: the canvas has ink (${s.inked} pixels)`);
    check(s.drawn > 20, `chart ${id}: its first series is drawn (${s.drawn} pixels in its colour)`);
    check(
      labels.every((l) => s.legend.includes(l)),
      `chart ${id}: the legend shows ${labels.join(', ')}`,
      JSON.stringify(s.legend),
    );
  }
}

async function switchRange(page, range) {
  const before = {};
  for (const id of Object.keys(CHARTS)) {
    before[id] = await chartState(page, id);
  }
  await page.click(`#range button[data-range="${range}"]`);
  await waitFor(
    page,
    `every chart to show ${range}`,
    ([r, b]) =>
      Object.entries(b).every(([id, loads]) => {
        const el = document.getElementById(`chart-${id}`);
        return el.dataset.range === r && Number(el.dataset.loads) > loads;
      }),
    [range, Object.fromEntries(Object.entries(before).map(([k, v]) => [k, v.loads]))],
  );
  const pressed = await page.$eval(`#range button[data-range="${range}"]`, (b) =>
    b.getAttribute('aria-pressed'),
  );
  check(pressed === 'true', `the range selector shows ${range} as selected`);
  for (const id of Object.keys(CHARTS)) {
    const s = await chartState(page, id);
    check(
      s.range === range && s.points > 0 && s.drawn > 20,
      `chart ${id}: redrawn for ${range} (${s.points} values, ${s.drawn} series pixels)`,
    );
    check(
      s.image !== before[id].image,
      `chart ${id}: the picture changed from ${before[id].range} to ${range}`,
    );
  }
}

async function main() {
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ];
  const ctx = await chromium.launchPersistentContext(env('DASH_PROFILE'), {
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    args,
    viewport: { width: 1440, height: 1000 },
  });
  const problems = [];
  const requests = [];
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    // A 401 before the token is given is expected; one with the token is
    // caught below by its response.
    page.on('console', (m) => {
      if (m.type() === 'error' && !/status of 401/.test(m.text())) {
        problems.push(`console error: ${m.text()}`);
      }
    });
    page.on('request', (r) => requests.push({ url: r.url(), auth: r.headers().authorization }));
    page.on('response', (r) => {
      const auth = r.request().headers().authorization;
      if (r.status() >= 400 && !(r.status() === 401 && auth === undefined)) {
        problems.push(`HTTP ${r.status()} for ${r.url()}`);
      }
    });
    await tokenFlow(page, requests);
    await checkAgents(page);
    await checkStatus(page);
    await checkFindings(page);
    await checkCharts(page);
    await switchRange(page, '6h');
    await switchRange(page, '24h');
    await switchRange(page, '15m');
    check(
      problems.length === 0,
      'no page errors, console errors or failed requests',
      problems.join('; '),
    );
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log(`screenshot: ${SCREENSHOT}`);
    // And on a narrow screen, for a look at the one-column layout.
    const narrow = SCREENSHOT.replace(/\.png$/, '-narrow.png');
    await page.setViewportSize({ width: 820, height: 1000 });
    await page.waitForTimeout(300); // the charts follow their new width
    await page.screenshot({ path: narrow, fullPage: true });
    console.log(`screenshot: ${narrow}`);
  } finally {
    await ctx.close();
  }
}

main().then(
  () => console.log(`PASS: ${passed} checks`),
  (e) => {
    console.error(`FAIL: ${e.message}`);
    process.exit(1);
  },
);
