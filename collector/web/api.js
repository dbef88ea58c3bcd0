// The dashboard's client of the collector's HTTP API. The bearer token, when
// the API needs one, lives in sessionStorage (this tab only) and travels in
// the Authorization header, never in a URL.

const TOKEN_KEY = 'strata.token';
const TIMEOUT_MS = 10000;

// Used when sessionStorage is disabled.
let memoryToken = '';

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
    }
  } catch {
    // Storage disabled: the token lasts until the page is reloaded.
  }
  memoryToken = token;
}

export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }

  get needsToken() {
    return this.status === 401 || this.status === 403;
  }
}

// GET path with params ({key: value or [values]}); resolves to the parsed JSON
// answer, rejects with an ApiError naming the status and the server's error.
export async function apiGet(path, params = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params)) {
    for (const one of Array.isArray(v) ? v : [v]) {
      if (one !== undefined && one !== null && one !== '') {
        url.searchParams.append(k, one);
      }
    }
  }
  const headers = { Accept: 'application/json' };
  const token = getToken() || memoryToken;
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  let res;
  try {
    res = await fetch(url, { headers, cache: 'no-store', credentials: 'omit', signal: ctl.signal });
  } catch (e) {
    throw new ApiError(0, e.name === 'AbortError' ? 'timed out' : 'collector unreachable', path);
  } finally {
    clearTimeout(timer);
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const msg = body && typeof body.error === 'string' ? body.error : res.statusText;
    throw new ApiError(res.status, msg, path);
  }
  return body;
}
