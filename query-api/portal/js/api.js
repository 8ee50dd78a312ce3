// The portal's only way to data: the tenant-scoped REST API on this origin, with the token
// the page was opened with (moved from the URL fragment to sessionStorage, never sent in a
// URL or a Referer).

// The tab's sessionStorage, or, where the browser refuses storage to this page (a frame of
// another site with third-party storage blocked), memory: the token then lasts as long as
// the page, and the console hands over a new one through the fragment.
function slot(key) {
  let memory = null;
  return {
    get() {
      try { return sessionStorage.getItem(key) ?? memory; } catch { return memory; }
    },
    set(v) {
      memory = v;
      try { sessionStorage.setItem(key, v); } catch { /* memory only */ }
    },
    clear() {
      memory = null;
      try { sessionStorage.removeItem(key); } catch { /* memory only */ }
    },
  };
}
// The bearer token, and the ID token of a sign-in through the identity provider (only as
// the hint of its sign-out; never sent to the API).
const store = slot('wattprint.token');
const idStore = slot('wattprint.id_token');

/** An API refusal or failure, with a message meant for people. */
export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title || '';
    this.detail = detail || '';
  }
}

/** Takes `#token=…` from the address (if there), keeps it for this tab and clears it from the URL. */
export function adoptTokenFromFragment() {
  const m = /^#token=([A-Za-z0-9_\-.]+)(?:&(.*))?$/.exec(location.hash);
  if (!m) return;
  adoptToken(m[1], null);
  const next = m[2] && m[2].startsWith('view=') ? decodeURIComponent(m[2].slice(5)) : '#/instances';
  history.replaceState(null, '', location.pathname + location.search + next);
}

/** Keeps `access` as the bearer token of this tab, and `id` (or none) as the ID token. */
export function adoptToken(access, id) {
  store.set(access);
  if (id) idStore.set(id); else idStore.clear();
}

export function token() {
  return store.get();
}

export function idToken() {
  return idStore.get();
}

export function signOut() {
  store.clear();
  idStore.clear();
}

/** The token's claims (for display and hiding admin actions only: the API enforces roles). */
export function claims() {
  return decodeJwt(token());
}

/** A JWT's claims, read without verifying (the API verifies); null when `t` is not one. */
export function decodeJwt(t) {
  if (!t) return null;
  try {
    const part = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

export function isAdmin() {
  const c = claims();
  if (!c) return false;
  if (Array.isArray(c.roles) && c.roles.includes('admin')) return true;
  return typeof c.scope === 'string' && c.scope.split(' ').includes('wattprint:admin');
}

async function request(method, path, body, accept) {
  const headers = { Authorization: `Bearer ${token()}`, Accept: accept || 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  } catch {
    throw new ApiError(0, 'The service cannot be reached', 'Check your connection and reload the page.');
  }
  if (!resp.ok) {
    let title = '', detail = '';
    try {
      const p = await resp.json();
      title = typeof p.title === 'string' ? p.title : '';
      detail = typeof p.detail === 'string' ? p.detail : '';
    } catch { /* not a problem document */ }
    throw new ApiError(resp.status, title, detail);
  }
  return resp;
}

export async function get(path) {
  return (await request('GET', path)).json();
}

export async function send(method, path, body) {
  return (await request(method, path, body)).json();
}

export async function blob(path) {
  return (await request('GET', path, undefined, '*/*')).blob();
}

/** Every page of a paged list (`instances`, `workloads`). */
export async function all(path, field) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 100; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await get(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    out.push(...page[field]);
    if (!page.next_cursor) break;
    cursor = page.next_cursor;
  }
  return out;
}
