// Numbers for people: always with a unit, and each shown number carries the exact API value
// it came from (`data-field`, `data-value`), which the browser tests compare with the API.

export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function decimals(v) {
  const a = Math.abs(v);
  if (a === 0) return 0;
  if (a >= 1000) return 1;
  if (a >= 10) return 2;
  if (a >= 1) return 3;
  return 4;
}

/** `v` with a fixed number of decimals by magnitude, thousands separated. */
export function num(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  const d = decimals(v);
  return v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
}

/** A number with its unit, as a `<span>` carrying the exact value. `field` names it for tests. */
export function qty(v, unit, field) {
  const shown = v === null || v === undefined ? 'not available' : `${num(v)} ${unit}`;
  return el('span', { class: 'qty', 'data-field': field, 'data-value': v === null || v === undefined ? '' : String(v), 'data-unit': unit }, shown);
}

export function pct(share) {
  if (share === null || share === undefined || !Number.isFinite(share)) return '—';
  return `${(share * 100).toFixed(1)} %`;
}

const pad = (n) => String(n).padStart(2, '0');

/** `2026-12-06 21:05 UTC` from ms or RFC 3339. */
export function when(t) {
  if (t === null || t === undefined) return '—';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
}

/** Value for an `<input type="datetime-local">`, in UTC. */
export function localInput(ms) {
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}

export function fromLocalInput(s) {
  const ms = Date.parse(`${s}:00Z`);
  return Number.isNaN(ms) ? null : ms;
}

export function duration(minutes) {
  if (minutes < 60) return `${minutes} min`;
  const h = Math.floor(minutes / 60), m = minutes % 60;
  return m ? `${h} h ${m} min` : `${h} h`;
}
