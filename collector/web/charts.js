// The key-series charts: one uPlot chart per row of CHARTS, fed by
// /v1/query with an aggregation, a grouping and a step that suits the range.

import uPlot from 'uplot';

import { apiGet } from './api.js';
import { formatValue } from './format.js';

export const RANGES = {
  '15m': { from: '-15m', step: '10s' },
  '1h': { from: '-1h', step: '30s' },
  '6h': { from: '-6h', step: '5m' },
  '24h': { from: '-24h', step: '15m' },
};

export const CHARTS = [
  { id: 'latency', metric: 'http.server.duration', agg: 'p95', by: 'role', unit: 's' },
  {
    id: 'cache',
    metric: 'cache.requests',
    agg: 'ratio',
    match: 'result=hit',
    by: 'cache',
    unit: 'ratio',
  },
  { id: 'memory', metric: 'mem.rss', agg: 'max', by: 'host', unit: 'B' },
  {
    id: 'stability',
    metric: 'net.probe.connects',
    agg: 'ratio',
    match: 'result=ok',
    by: 'target',
    unit: 'ratio',
  },
];

const PALETTE = [
  '#2563eb',
  '#059669',
  '#d97706',
  '#dc2626',
  '#7c3aed',
  '#0891b2',
  '#db2777',
  '#65a30d',
  '#475569',
  '#ea580c',
];
const HEIGHT = 220;

function seriesLabel(spec, labels) {
  const v = spec.by
    .split(',')
    .map((k) => labels?.[k])
    .filter((x) => x !== undefined && x !== '');
  return v.length ? v.join(' · ') : '(no label)';
}

// The answer as uPlot columns on the full bucket grid, so a bucket without
// data is a gap rather than a line drawn across it.
function toColumns(spec, ans) {
  const step = ans.step > 0 ? ans.step : 60000;
  const xs = [];
  for (let t = ans.from; t < ans.to; t += step) {
    xs.push(t / 1000);
  }
  const index = new Map(xs.map((x, i) => [x, i]));
  const series = (ans.series || [])
    .map((s) => ({ label: seriesLabel(spec, s.labels), points: s.points || [] }))
    .sort((a, b) => a.label.localeCompare(b.label));
  const cols = series.map((s) => {
    const ys = new Array(xs.length).fill(null);
    for (const [ms, v] of s.points) {
      const i = index.get(ms / 1000);
      if (i !== undefined && v !== null && Number.isFinite(v)) {
        ys[i] = v;
      }
    }
    return ys;
  });
  return { labels: series.map((s) => s.label), data: [xs, ...cols] };
}

function lastValue(ys) {
  for (let i = (ys?.length ?? 0) - 1; i >= 0; i--) {
    if (ys[i] !== null && ys[i] !== undefined) {
      return ys[i];
    }
  }
  return null;
}

const pad = (n) => String(n).padStart(2, '0');

function timeLabel(s) {
  const d = new Date(s * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// 24-hour tick labels: seconds only when ticks are under a minute apart.
function timeTicks(u, splits, axisIdx, space, incr) {
  return splits.map((s) => {
    const d = new Date(s * 1000);
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    if (incr < 60) {
      return `${hm}:${pad(d.getSeconds())}`;
    }
    return d.getHours() === 0 && d.getMinutes() === 0
      ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`
      : hm;
  });
}

function yRange(spec) {
  if (spec.unit === 'ratio') {
    return (u, min, max) => [Math.min(0, min ?? 0), Math.max(1, max ?? 1)];
  }
  return (u, min, max) => [0, max > 0 ? max * 1.15 : 1];
}

// Fewer than 60 values, or values without a neighbour on either side.
function isSparse(ys) {
  let values = 0;
  for (let i = 0; i < ys.length; i++) {
    if (ys[i] === null) {
      continue;
    }
    values++;
    if ((i === 0 || ys[i - 1] === null) && (i === ys.length - 1 || ys[i + 1] === null)) {
      return true;
    }
  }
  return values < 60;
}

export class Chart {
  constructor(el, spec) {
    this.el = el;
    this.plotEl = el.querySelector('.plot');
    this.spec = spec;
    this.u = null;
    this.key = '';
    this.xr = [0, 1];
    this.loads = 0;
    this.sparse = true;
    this.empty = document.createElement('div');
    this.empty.className = 'chart-empty';
    this.empty.hidden = true;
    el.appendChild(this.empty);
    new ResizeObserver(() => this.resize()).observe(this.plotEl);
  }

  width() {
    return Math.max(240, Math.floor(this.plotEl.clientWidth));
  }

  resize() {
    if (this.u && Math.abs(this.u.width - this.width()) > 1) {
      this.u.setSize({ width: this.width(), height: HEIGHT });
    }
  }

  options(labels) {
    const unit = this.spec.unit;
    // Without the cursor on the plot, the legend shows each series' latest value.
    const value = (u, v, si, idx) => {
      if (idx === null || idx === undefined) {
        v = lastValue(u.data[si]);
      }
      return v === null || v === undefined ? '–' : formatValue(v, unit);
    };
    return {
      width: this.width(),
      height: HEIGHT,
      scales: {
        x: { time: true, range: () => this.xr },
        y: { range: yRange(this.spec) },
      },
      axes: [
        {
          stroke: '#64748b',
          grid: { stroke: '#e2e8f0', width: 1 },
          ticks: { show: false },
          values: timeTicks,
        },
        {
          stroke: '#64748b',
          size: 64,
          grid: { stroke: '#e2e8f0', width: 1 },
          ticks: { show: false },
          values: (u, splits) => splits.map((v) => formatValue(v, unit)),
        },
      ],
      series: [
        {
          label: 'time',
          value: (u, v) => (v === null || v === undefined ? 'latest' : timeLabel(v)),
        },
        ...labels.map((label, i) => ({
          label,
          stroke: PALETTE[i % PALETTE.length],
          fill: `${PALETTE[i % PALETTE.length]}14`,
          width: 2,
          spanGaps: false,
          // Sparse series (a short history, gaps) show their points, or a
          // lone bucket would draw nothing.
          points: { show: () => this.sparse, size: 6, fill: PALETTE[i % PALETTE.length] },
          value,
        })),
      ],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
  }

  async load(rangeName) {
    const range = RANGES[rangeName];
    const s = this.spec;
    const ans = await apiGet('/v1/query', {
      metric: s.metric,
      agg: s.agg,
      match: s.match,
      by: s.by,
      from: range.from,
      to: 'now',
      step: range.step,
    });
    this.render(rangeName, ans);
  }

  render(rangeName, ans) {
    const { labels, data } = toColumns(this.spec, ans);
    const key = labels.join('\n');
    this.xr = [ans.from / 1000, ans.to / 1000];
    this.sparse = data.slice(1).some(isSparse);
    if (this.u === null || key !== this.key) {
      this.u?.destroy();
      this.u = new uPlot(this.options(labels), data, this.plotEl);
      this.key = key;
    } else {
      this.u.setData(data);
    }
    const values = data.slice(1).reduce((n, ys) => n + ys.filter((y) => y !== null).length, 0);
    this.empty.hidden = values > 0;
    this.empty.textContent = `no ${this.spec.metric} data in the last ${rangeName}`;
    this.loads++;
    Object.assign(this.el.dataset, {
      range: rangeName,
      series: String(labels.length),
      points: String(values),
      resolution: ans.resolution || '',
      loads: String(this.loads),
    });
    this.el.classList.remove('failed');
  }

  fail(err) {
    this.el.classList.add('failed');
    this.empty.hidden = false;
    this.empty.textContent = `${this.spec.metric}: ${err.message}`;
  }
}
