// Number, unit and time formatting shared by the tables and the charts.

const BINARY = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

function trim(x, digits) {
  return Number(x.toFixed(digits)).toString();
}

export function formatBytes(v) {
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1024 && i < BINARY.length - 1) {
    x /= 1024;
    i++;
  }
  return `${v < 0 ? '-' : ''}${trim(x, x >= 100 ? 0 : 1)} ${BINARY[i]}`;
}

export function formatSeconds(v) {
  const a = Math.abs(v);
  if (a === 0) {
    return '0 s';
  }
  if (a < 1e-3) {
    return `${trim(v * 1e6, 0)} µs`;
  }
  if (a < 1) {
    return `${trim(v * 1e3, a < 0.01 ? 2 : 1)} ms`;
  }
  return `${trim(v, 2)} s`;
}

// v in unit as the API names units: s, B, ratio, 1/s, B/h, d or "".
export function formatValue(v, unit) {
  if (v === null || v === undefined || !Number.isFinite(v)) {
    return 'no data';
  }
  switch (unit) {
    case 's':
      return formatSeconds(v);
    case 'B':
      return formatBytes(v);
    case 'B/h':
      return `${formatBytes(v)}/h`;
    case 'B/s':
      return `${formatBytes(v)}/s`;
    case 'ratio':
      return `${trim(v * 100, 1)} %`;
    case '1/s':
      return `${trim(v, v >= 100 ? 0 : 2)}/s`;
    case 'd':
      return `${trim(v, 0)} d`;
    default:
      return Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en') : trim(v, 3);
  }
}

// "3s ago", "4m ago", "2h ago", "5d ago".
export function formatAgo(seconds) {
  if (!Number.isFinite(seconds)) {
    return 'never';
  }
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s}s ago`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ago`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h ago`;
  }
  return `${Math.floor(s / 86400)}d ago`;
}

export function formatClock(ms) {
  return new Date(ms).toLocaleTimeString('en-GB', { hour12: false });
}
