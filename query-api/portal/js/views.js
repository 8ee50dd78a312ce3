// The portal's views. Each returns the nodes of `main`; data comes only from the API (api.js).

import { beginSignIn } from './signin.js';
import { get, all, send, blob, isAdmin, ApiError } from './api.js';
import { el, qty, num, pct, when, localInput, fromLocalInput, duration } from './format.js';
import { timeChart, sparkline, scheduleLanes } from './charts.js';

const HOUR = 3600e3;
const RANGES = { '1h': HOUR, '6h': 6 * HOUR, '24h': 24 * HOUR, '7d': 7 * 24 * HOUR, '30d': 30 * 24 * HOUR };
const RANGE_NAMES = { '1h': 'last hour', '6h': 'last 6 hours', '24h': 'last 24 hours', '7d': 'last 7 days', '30d': 'last 30 days' };
const STEPS = { raw: 'raw samples', '5m': '5 minutes', '1h': '1 hour', '1d': '1 day' };

export async function render(parts, params) {
  const [section, id, sub] = parts;
  switch (section) {
    case undefined:
    case 'instances':
      return id === undefined ? instancesView() : instanceView(id, params);
    case 'workloads':
      if (id === undefined) return workloadsView();
      if (sub === 'whatif') return whatifView(id, params);
      if (sub === undefined) return workloadView(id);
      return notFound();
    case 'statements':
      return statementsView();
    case 'restatements':
      return restatementsView(params);
    case 'methodology':
      return methodologyView();
    default:
      return notFound();
  }
}

export function notFound(detail) {
  return [el('h1', { 'data-notfound': 'true' }, 'Not found'),
    el('div', { class: 'notice', role: 'alert' },
      'There is no such instance, workload or page for your tenant: it may belong to another tenant, ',
      'have been removed, or the address may be mistyped. ',
      el('a', { href: '#/instances' }, 'Go to your instances'), '.'),
    detail ? el('p', { class: 'muted' }, `The service said: ${detail}`) : null];
}

export function signedOut(oidc) {
  if (oidc) {
    return [el('h1', {}, 'Signed out'),
      el('div', { class: 'notice' }, 'Sign in with your organisation\'s account to see your tenant\'s instances. ',
        'If you use a cloud console, you can also open the portal from there.'),
      signInButton()];
  }
  return [el('h1', {}, 'Signed out'),
    el('div', { class: 'notice' },
      'The portal needs a sign-in token. Open it from your cloud console, or on a demo from the portal URL ',
      'that `wattprint up` printed (it carries the token).')];
}

/** Sends the browser to the identity provider, to land on the view now in the address. */
export function signInButton() {
  const status = el('p', { class: 'muted', role: 'status' });
  const button = el('button', {
    type: 'button', class: 'primary', id: 'sign-in',
    onclick: () => {
      button.disabled = true;
      status.textContent = 'Going to your identity provider…';
      const view = /^#\/./.test(location.hash) ? location.hash : '#/instances';
      beginSignIn(view).catch((e) => {
        button.disabled = false;
        status.textContent = `${e.message} ${e.next || ''}`;
      });
    },
  }, 'Sign in');
  return el('div', { class: 'sign-in' }, el('p', {}, button), status);
}

/** A sign-in through the identity provider that failed: why, and a way to try again. */
export function signInFailed(e, oidc) {
  return [el('h1', { 'data-signin-failed': 'true' }, 'Sign-in failed'),
    notice('error', `${e.message} ${e.next}`),
    oidc ? signInButton() : null];
}

function notice(kind, ...text) {
  return el('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...text);
}

/** A problem inside a view (one section failed): a sentence, never a body or trace. */
function inlineProblem(e, what) {
  if (!(e instanceof ApiError)) console.error(e);
  const detail = e instanceof ApiError && e.status >= 400 && e.status < 500 && e.detail ? ` (${e.detail})` : '';
  return notice('error', `${what} could not be loaded${detail}. Try again, or choose another range.`);
}

function card(label, value, extra) {
  return el('div', { class: 'card' }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value), extra ? el('div', { class: 'label' }, extra) : null);
}

function provenanceText(p) {
  if (!p) return '—';
  const parts = [
    `${pct(p.energy_measured_share)} of energy measured (energy counter)`,
    `intensity per 5-min interval: ${p.intervals_actual} actual, ${p.intervals_forecast} forecast, ${p.intervals_fallback} fallback (average), ${p.intervals_missing_intensity} missing`,
  ];
  if (p.intervals_replayed_intensity) parts.push(`${p.intervals_replayed_intensity} on replayed historical intensity`);
  return parts.join('; ');
}

function measuredShare(u) {
  return u.it_energy_mj ? (u.it_energy_mj - u.estimated_energy_mj) / u.it_energy_mj : null;
}

// ---- instances ------------------------------------------------------------------------

async function instancesView() {
  const to = Date.now();
  const from = to - 24 * HOUR;
  const [instances, summary] = await Promise.all([
    all('/v1/instances?limit=1000', 'instances'),
    get(`/v1/summary?from=${from}&to=${to}`),
  ]);
  const head = [el('h1', {}, 'Instances'),
    el('p', { class: 'muted' }, `Energy and emissions over the last 24 hours (${when(summary.from)} to ${when(summary.to)}); emissions on marginal grid intensity, facility energy (IT × PUE).`)];
  if (!instances.length) {
    return [...head, notice('empty', 'this tenant has no instances. Instances appear here once your cloud operator assigns GPUs to them and their host agent reports.')];
  }
  const usage = new Map(summary.instances.map((u) => [u.instance_id, u]));
  const series = await Promise.all(instances.map((i) =>
    get(`/v1/instances/${encodeURIComponent(i.instance_id)}/series?from=${from}&to=${to}&step=5m`).catch(() => null)));
  const t = summary.totals;
  const cards = el('div', { class: 'cards', 'data-scope': 'totals' },
    card('Energy (IT, 24 h)', qty(t.it_energy_kwh, 'kWh', 'it_energy_kwh')),
    card('Emissions (marginal, 24 h)', qty(t.operational_co2e_g, 'g CO₂e', 'operational_co2e_g')),
    card('Instances', String(instances.length)));
  const rows = instances.map((inst, k) => {
    const u = usage.get(inst.instance_id);
    const s = series[k];
    // The sparkline spans from the first measured step (a new instance's hour is not
    // squeezed into the last pixels of 24 hours), and says since when.
    const pts = s ? s.points : [];
    const first = pts.findIndex((p) => p.power_mean_w !== null);
    const shownPts = first < 0 ? [] : pts.slice(first);
    const power = shownPts.map((p) => p.power_mean_w);
    const measured = power.filter((v) => v !== null);
    const mean = measured.length ? measured.reduce((a, b) => a + b, 0) / measured.length : null;
    const max = measured.length ? Math.max(...measured) : null;
    const since = first > 0 ? ` since ${when(shownPts[0].start)}` : '';
    const words = measured.length ? `mean ${num(mean)} W, highest 5-min mean ${num(max)} W${since}` : 'no power measured in 24 h';
    const models = [...new Set(inst.gpus.map((g) => g.model))].join(', ');
    return el('tr', { 'data-instance': inst.instance_id },
      el('th', { scope: 'row' }, el('a', { href: `#/instances/${encodeURIComponent(inst.instance_id)}` }, inst.instance_id)),
      el('td', {}, inst.region, inst.zip_code ? ` (zip ${inst.zip_code})` : ''),
      el('td', {}, `${inst.gpus.length} × ${models || 'GPU'}`),
      el('td', { class: 'num' }, u ? qty(u.it_energy_kwh, 'kWh', 'it_energy_kwh') : 'no data in 24 h'),
      el('td', { class: 'num' }, u ? qty(u.operational_co2e_g, 'g CO₂e', 'operational_co2e_g') : 'no data in 24 h'),
      el('td', {}, sparkline(power, { label: `Power over the last 24 hours: ${words}` }), el('div', { class: 'muted' }, words)));
  });
  return [...head, cards,
    el('table', { 'data-from': String(from), 'data-to': String(to), id: 'instances' },
      el('caption', { class: 'sr-only' }, 'Instances with energy, emissions and power over the last 24 hours'),
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col' }, 'Instance'), el('th', { scope: 'col' }, 'Grid region'), el('th', { scope: 'col' }, 'GPUs'),
        el('th', { scope: 'col', class: 'num' }, 'Energy (kWh)'), el('th', { scope: 'col', class: 'num' }, 'Emissions (g CO₂e)'),
        el('th', { scope: 'col' }, 'Power, 24 h (W)'))),
      el('tbody', {}, rows))];
}

function rangeOf(params) {
  const f = Number(params.get('from')), t = Number(params.get('to'));
  if (params.get('from') && params.get('to') && Number.isFinite(f) && Number.isFinite(t) && t > f) {
    return { from: f, to: t, name: null };
  }
  const name = RANGES[params.get('range')] ? params.get('range') : '24h';
  const to = Date.now();
  return { from: to - RANGES[name], to, name };
}

function rangeControls(base, range, step) {
  const rangeSel = el('select', { name: 'range', id: 'range' },
    ...Object.keys(RANGES).map((k) => el('option', { value: k, selected: range.name === k }, RANGE_NAMES[k])),
    el('option', { value: 'custom', selected: range.name === null }, 'custom (from / to below)'));
  const stepSel = el('select', { name: 'step', id: 'step' },
    ...Object.entries(STEPS).map(([k, v]) => el('option', { value: k, selected: step === k }, v)));
  const fromIn = el('input', { type: 'datetime-local', name: 'from', id: 'from', value: localInput(range.from) });
  const toIn = el('input', { type: 'datetime-local', name: 'to', id: 'to', value: localInput(range.to) });
  const form = el('form', { class: 'controls', 'aria-label': 'Time range and step' },
    el('label', { for: 'range' }, 'Range', rangeSel),
    el('label', { for: 'from' }, 'From (UTC)', fromIn),
    el('label', { for: 'to' }, 'To (UTC)', toIn),
    el('label', { for: 'step' }, 'Step', stepSel),
    el('button', { type: 'submit', class: 'primary' }, 'Show'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams({ step: stepSel.value });
    if (rangeSel.value === 'custom') {
      const f = fromLocalInput(fromIn.value), t = fromLocalInput(toIn.value);
      if (f === null || t === null || t <= f) {
        form.append(notice('error', 'Enter a start before the end, both as date and time (UTC).'));
        return;
      }
      q.set('from', String(f));
      q.set('to', String(t));
    } else {
      q.set('range', rangeSel.value);
    }
    location.hash = `${base}?${q}`;
  });
  return form;
}

async function instanceView(id, params) {
  const instances = await all('/v1/instances?limit=1000', 'instances');
  const inst = instances.find((i) => i.instance_id === id);
  if (!inst) return notFound();
  const range = rangeOf(params);
  const step = STEPS[params.get('step')] ? params.get('step') : '5m';
  const base = `#/instances/${encodeURIComponent(id)}`;
  const head = [el('h1', {}, `Instance ${id}`),
    el('p', { class: 'muted' }, `${inst.region}${inst.zip_code ? `, zip ${inst.zip_code}` : ''}; ${inst.gpus.length} GPU(s): `,
      inst.gpus.map((g) => el('span', { class: 'tag' }, `${g.model}, limit ${num(g.power_limit_w)} W`))),
    rangeControls(base, range, step)];
  let s;
  try {
    s = await get(`/v1/instances/${encodeURIComponent(id)}/series?from=${range.from}&to=${range.to}&step=${step}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return notFound();
    if (e instanceof ApiError && e.status === 400) {
      return [...head, notice('error', `This range and step cannot be shown: ${e.detail || e.title}. Choose a coarser step or a shorter range.`)];
    }
    throw e;
  }
  const section = el('section', { id: 'series', 'data-from': String(range.from), 'data-to': String(range.to), 'data-step': step, 'aria-label': 'Charts' });
  const ctx = el('p', { class: 'muted' }, `${when(s.from)} to ${when(s.to)}, step ${STEPS[step]}.`);
  return [...head, ctx, section, ...(step === 'raw' ? rawCharts(s, section) : aggregateCharts(s, section))];
}

function aggregateCharts(s, section) {
  const pts = s.points;
  if (!pts.some((p) => p.energy_mj > 0 || p.coverage > 0)) {
    section.append(notice('empty', 'no measurements in this range. Choose a longer range, or check that the instance is running and its host agent reports.'));
    return [];
  }
  const xs = pts.map((p) => Date.parse(p.start) / 1000);
  const energyMj = pts.reduce((a, p) => a + p.energy_mj, 0);
  const co2e = pts.reduce((a, p) => a + p.co2e_g, 0);
  const avgCo2e = pts.some((p) => p.average_co2e_g !== null) ? pts.reduce((a, p) => a + (p.average_co2e_g || 0), 0) : null;
  const estimated = pts.reduce((a, p) => a + p.estimated_energy_mj, 0);
  const kinds = pts.reduce((k, p) => {
    for (const [n, v] of Object.entries(p.intensity_kinds)) k[n] = (k[n] || 0) + v;
    return k;
  }, {});
  const maxW = Math.max(...pts.map((p) => p.power_max_w ?? 0));
  section.append(el('div', { class: 'cards', 'data-scope': 'series-totals' },
    card('Energy (IT)', qty(energyMj / 3.6e9, 'kWh', 'energy_kwh'), `${pct(energyMj ? (energyMj - estimated) / energyMj : null)} measured by the energy counter`),
    card('Emissions (marginal, IT)', qty(co2e, 'g CO₂e', 'co2e_g')),
    card('Emissions (average intensity, IT)', qty(avgCo2e, 'g CO₂e', 'average_co2e_g')),
    card('Highest GPU power', qty(maxW, 'W', 'power_max_w')),
    card('Intensity used (5-min GPU-intervals)', `${kinds.actual || 0} actual`, `${kinds.forecast || 0} forecast, ${kinds.fallback_average || 0} fallback, ${kinds.missing || 0} missing${kinds.replayed ? `; ${kinds.replayed} on replayed historical intensity` : ''}`)));
  const col = (f) => pts.map((p) => (p.coverage > 0 || p.energy_mj > 0 ? p[f] : null));
  section.append(
    timeChart({ id: 'chart-power', title: 'Power', unit: 'W', xs, series: [{ label: 'mean', values: col('power_mean_w') }, { label: 'highest GPU reading', values: col('power_max_w') }] }),
    timeChart({ id: 'chart-energy', title: 'Energy per step', unit: 'kWh', xs, series: [{ label: 'IT energy', values: col('energy_kwh') }] }),
    timeChart({ id: 'chart-intensity', title: 'Grid carbon intensity', unit: 'g CO₂e/kWh', xs, series: [{ label: 'marginal', values: col('intensity_g_per_kwh') }, { label: 'average', values: col('average_intensity_g_per_kwh') }] }),
    timeChart({ id: 'chart-emissions', title: 'Emissions per step', unit: 'g CO₂e', xs, series: [{ label: 'marginal', values: col('co2e_g') }, { label: 'average', values: col('average_co2e_g') }] }));
  const shown = pts.filter((p) => p.coverage > 0 || p.energy_mj > 0).slice(-288);
  section.append(el('details', {}, el('summary', {}, `Data table (${shown.length === pts.length ? 'all' : `latest ${shown.length} of`} ${pts.length} steps)`),
    el('table', {}, el('thead', {}, el('tr', {}, ...['Step start', 'Energy (kWh)', 'Mean power (W)', 'Coverage', 'Marginal (g CO₂e/kWh)', 'Average (g CO₂e/kWh)', 'Emissions (g CO₂e)'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, shown.map((p) => el('tr', {}, el('td', {}, when(p.start)), el('td', { class: 'num' }, num(p.energy_kwh)), el('td', { class: 'num' }, num(p.power_mean_w)),
        el('td', { class: 'num' }, pct(p.coverage)), el('td', { class: 'num' }, num(p.intensity_g_per_kwh)), el('td', { class: 'num' }, num(p.average_intensity_g_per_kwh)), el('td', { class: 'num' }, num(p.co2e_g))))))));
  return [];
}

function rawCharts(s, section) {
  const pts = s.points;
  if (!pts.length) {
    section.append(notice('empty', 'no samples in this range. Choose a longer range, or check that the instance is running and its host agent reports.'));
    return [];
  }
  const gpus = [...new Set(pts.map((p) => p.gpu_uuid))];
  const tables = gpus.map((g) => {
    const mine = pts.filter((p) => p.gpu_uuid === g);
    return [mine.map((p) => Date.parse(p.end) / 1000), mine.map((p) => p.power_w)];
  });
  const joined = uPlot.join(tables);
  const energyMj = pts.reduce((a, p) => a + p.energy_mj, 0);
  const counted = pts.filter((p) => p.energy_source !== 'power_integration').reduce((a, p) => a + p.energy_mj, 0);
  section.append(el('div', { class: 'cards', 'data-scope': 'series-totals' },
    card('Energy (IT)', qty(energyMj / 3.6e9, 'kWh', 'energy_kwh'), `${pct(energyMj ? counted / energyMj : null)} from the energy counter`),
    card('Samples', String(pts.length), `${gpus.length} GPU(s)`)),
  notice('', 'Intensity and emissions are joined per 5-minute interval: choose the 5-minute step or coarser to see them.'),
  timeChart({ id: 'chart-power', title: 'Power per GPU (raw samples)', unit: 'W', xs: joined[0], series: gpus.map((g, i) => ({ label: `GPU ${g.slice(0, 12)}…`, values: joined[i + 1] })) }));
  return [];
}

// ---- workloads ------------------------------------------------------------------------

function footprintCells(d) {
  const f = d.footprint;
  return [
    el('td', { class: 'num' }, qty(f.it_energy_kwh, 'kWh', 'it_energy_kwh')),
    el('td', { class: 'num' }, qty(f.total_co2e_g, 'g CO₂e', 'total_co2e_g')),
    el('td', { class: 'num' }, qty(f.sci_g_per_unit, `g CO₂e per ${f.functional_unit}`, 'sci_g_per_unit')),
    el('td', {}, provenanceText(f.provenance)),
  ];
}

async function workloadsView() {
  const [workloads, instances] = await Promise.all([all('/v1/workloads?limit=100', 'workloads'), all('/v1/instances?limit=1000', 'instances')]);
  const admin = isAdmin();
  const out = [el('h1', {}, 'Workloads'),
    el('p', { class: 'muted' }, 'Named runs over your instances, each with its energy, emissions (marginal, facility, plus embodied share) and Software Carbon Intensity per functional unit: SCI = (E × I + M) / R.')];
  if (!workloads.length) {
    out.push(notice('empty', admin
      ? 'no workloads yet. Create one below over an instance and a time range to see its footprint, SCI and what-ifs.'
      : 'no workloads yet. Ask a tenant admin to create one (in this portal or with POST /v1/workloads) to see its footprint, SCI and what-ifs.'));
  } else {
    const details = await Promise.all(workloads.map((w) => get(`/v1/workloads/${encodeURIComponent(w.id)}`).catch((e) => e)));
    out.push(el('table', { id: 'workloads' },
      el('thead', {}, el('tr', {}, ...['Workload', 'Status', 'Period (UTC)', 'Instances', 'Energy (kWh)', 'Emissions (g CO₂e)', 'SCI', 'Provenance'].map((h) => el('th', { scope: 'col', class: /Energy|Emissions|SCI/.test(h) ? 'num' : undefined }, h)))),
      el('tbody', {}, workloads.map((w, k) => {
        const d = details[k];
        return el('tr', { 'data-workload': w.id },
          el('th', { scope: 'row' }, el('a', { href: `#/workloads/${encodeURIComponent(w.id)}` }, w.label),
            el('div', {}, Object.entries(w.labels || {}).map(([a, b]) => el('span', { class: 'tag' }, `${a}=${b}`)))),
          el('td', {}, w.status),
          el('td', {}, `${when(w.from)} – ${w.to ? when(w.to) : 'running'}`),
          el('td', {}, w.instance_ids.join(', ')),
          ...(d instanceof Error ? [el('td', { colspan: '4' }, `Footprint not available${d.detail ? `: ${d.detail}` : ''}.`)] : footprintCells(d)));
      }))));
  }
  if (admin) out.push(createForm(instances));
  return out;
}

function createForm(instances) {
  const now = Date.now();
  const label = el('input', { id: 'wl-label', name: 'label', required: true, maxlength: '200' });
  const unit = el('input', { id: 'wl-unit', name: 'functional_unit', required: true, value: 'training run' });
  const units = el('input', { id: 'wl-units', name: 'functional_units', type: 'number', min: '0', step: 'any', required: true, value: '1' });
  const from = el('input', { id: 'wl-from', name: 'from', type: 'datetime-local', required: true, value: localInput(now - HOUR) });
  const to = el('input', { id: 'wl-to', name: 'to', type: 'datetime-local', value: localInput(now) });
  const boxes = instances.map((i) => el('label', {}, el('input', { type: 'checkbox', name: 'instance', value: i.instance_id }), ` ${i.instance_id}`));
  const status = el('div', { 'aria-live': 'polite' });
  const form = el('form', { id: 'create-workload', 'data-admin': 'true' },
    el('fieldset', {}, el('legend', {}, 'New workload (admins)'),
      el('div', { class: 'controls' },
        el('label', { for: 'wl-label' }, 'Label', label),
        el('label', { for: 'wl-from' }, 'From (UTC)', from),
        el('label', { for: 'wl-to' }, 'To (UTC, empty: still running)', to),
        el('label', { for: 'wl-unit' }, 'Functional unit (what R counts)', unit),
        el('label', { for: 'wl-units' }, 'R (how many)', units)),
      el('fieldset', {}, el('legend', {}, 'Instances'), ...boxes),
      el('button', { type: 'submit', class: 'primary' }, 'Create workload'), status));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const ids = boxes.map((b) => b.querySelector('input')).filter((c) => c.checked).map((c) => c.value);
    const f = fromLocalInput(from.value), t = to.value ? fromLocalInput(to.value) : null;
    if (!ids.length) { status.replaceChildren(notice('error', 'Choose at least one instance.')); return; }
    if (f === null) { status.replaceChildren(notice('error', 'Enter the start as date and time (UTC).')); return; }
    const body = { label: label.value, instance_ids: ids, from: f, functional_unit: unit.value, functional_units: Number(units.value) };
    if (t !== null) body.to = t;
    try {
      const w = await send('POST', '/v1/workloads', body);
      location.hash = `#/workloads/${encodeURIComponent(w.id)}`;
    } catch (e) {
      status.replaceChildren(inlineProblem(e, 'The workload'));
    }
  });
  return form;
}

async function workloadView(id) {
  let d;
  try {
    d = await get(`/v1/workloads/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return notFound();
    throw e;
  }
  const f = d.footprint;
  const out = [el('h1', {}, `Workload ${d.label}`),
    el('p', { class: 'muted' }, `${d.status === 'open' ? 'Running' : 'Closed'}; ${when(d.from)} – ${d.to ? when(d.to) : 'now'}; on ${d.instance_ids.join(', ')}.`),
    el('div', { class: 'cards', 'data-scope': 'footprint' },
      card('Energy (IT)', qty(f.it_energy_kwh, 'kWh', 'it_energy_kwh'), `facility ${num(f.facility_energy_kwh)} kWh`),
      card('Operational emissions (marginal, facility)', qty(f.operational_co2e_g, 'g CO₂e', 'operational_co2e_g')),
      card('Embodied share', qty(f.embodied_co2e_g, 'g CO₂e', 'embodied_co2e_g')),
      card('Total', qty(f.total_co2e_g, 'g CO₂e', 'total_co2e_g')),
      card(`SCI per ${f.functional_unit}`, qty(f.sci_g_per_unit, `g CO₂e/${f.functional_unit}`, 'sci_g_per_unit'), `R = ${num(f.functional_units)}`),
      f.average ? card('SCI on average intensity', qty(f.average.sci_g_per_unit, `g CO₂e/${f.functional_unit}`, 'average_sci_g_per_unit')) : null),
    el('h2', {}, 'Where the numbers come from'),
    el('dl', { class: 'facts' },
      el('dt', {}, 'Provenance'), el('dd', {}, provenanceText(f.provenance)),
      el('dt', {}, 'Coverage'), el('dd', {}, `${pct(f.coverage.expected_gpu_ms ? f.coverage.covered_gpu_ms / f.coverage.expected_gpu_ms : null)} of the expected GPU-time has samples`),
      el('dt', {}, 'Embodied'), el('dd', {}, `${f.embodied.gpus} GPU(s)${f.embodied.unknown_models.length ? `; not in the hardware catalog (counted as 0): ${f.embodied.unknown_models.join(', ')}` : ''}`),
      el('dt', {}, 'Average intensity'), el('dd', {}, f.average ? `${num(f.average.intensity_g_per_kwh)} g CO₂e/kWh from ${f.average.intensity_sources.join(', ') || 'no source'}` : 'not available on this server'),
      el('dt', {}, 'Labels'), el('dd', {}, Object.keys(d.labels || {}).length ? Object.entries(d.labels).map(([a, b]) => el('span', { class: 'tag' }, `${a}=${b}`)) : 'none')),
    el('p', {}, el('a', { href: `#/workloads/${encodeURIComponent(d.id)}/whatif`, id: 'whatif-link' }, 'What if it had run at other times? (Flexible Start, Pause and Resume)'))];
  if (isAdmin()) out.push(adminActions(d));
  return out;
}

function adminActions(d) {
  const status = el('div', { 'aria-live': 'polite' });
  const text = el('textarea', { id: 'labels', rows: '4', cols: '40' });
  text.value = Object.entries(d.labels || {}).map(([a, b]) => `${a}=${b}`).join('\n');
  const labelsForm = el('form', { id: 'labels-form' }, el('label', { for: 'labels' }, 'Labels, one key=value per line'), el('br'), text, el('br'),
    el('button', { type: 'submit' }, 'Save labels'));
  labelsForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const labels = {};
    for (const line of text.value.split('\n').map((l) => l.trim()).filter(Boolean)) {
      const i = line.indexOf('=');
      if (i < 1) { status.replaceChildren(notice('error', `“${line}” is not key=value.`)); return; }
      labels[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    try {
      await send('PUT', `/v1/workloads/${encodeURIComponent(d.id)}/labels`, { labels });
      status.replaceChildren(notice('', 'Labels saved.'));
    } catch (e) {
      status.replaceChildren(inlineProblem(e, 'The labels'));
    }
  });
  const parts = [el('h2', {}, 'Admin actions'), labelsForm];
  if (d.status === 'open') {
    const closeForm = el('form', { id: 'close-form' }, el('button', { type: 'submit' }, 'Close workload now'));
    closeForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        await send('POST', `/v1/workloads/${encodeURIComponent(d.id)}/close`, {});
        location.hash = `#/workloads/${encodeURIComponent(d.id)}?closed=${Date.now()}`;
      } catch (e) {
        status.replaceChildren(inlineProblem(e, 'Closing'));
      }
    });
    parts.push(closeForm);
  }
  parts.push(status);
  return el('section', { 'data-admin': 'true', 'aria-label': 'Admin actions' }, ...parts);
}

// ---- what-if --------------------------------------------------------------------------

async function whatifView(id, params) {
  let d;
  try {
    d = await get(`/v1/workloads/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return notFound();
    throw e;
  }
  const windowH = ['6', '12', '24', '48'].includes(params.get('window')) ? params.get('window') : '24';
  const factor = ['1.25', '1.5', '2', '3'].includes(params.get('factor')) ? params.get('factor') : '2';
  const base = `#/workloads/${encodeURIComponent(id)}/whatif`;
  const winSel = el('select', { id: 'window' }, ...['6', '12', '24', '48'].map((v) => el('option', { value: v, selected: v === windowH }, `${v} h`)));
  const facSel = el('select', { id: 'factor' }, ...['1.25', '1.5', '2', '3'].map((v) => el('option', { value: v, selected: v === factor }, `${v} × duration`)));
  const form = el('form', { class: 'controls' }, el('label', { for: 'window' }, 'Flexible Start: latest start after the actual one', winSel),
    el('label', { for: 'factor' }, 'Pause and Resume: finish within', facSel), el('button', { type: 'submit', class: 'primary' }, 'Compute'));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); location.hash = `${base}?window=${winSel.value}&factor=${facSel.value}`; });
  const out = [el('h1', {}, `What-if: ${d.label}`),
    el('p', { class: 'muted' }, 'In hindsight, on the actual marginal intensity of the workload’s grid region (Dodge et al., 2022): the same run started at the best time within a window, or paused in the dirtiest 5-minute slots and finished by a deadline.'),
    form];
  let w;
  try {
    w = await get(`/v1/workloads/${encodeURIComponent(id)}/whatif?window_hours=${windowH}&factor=${factor}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return notFound();
    out.push(inlineProblem(e, 'The what-ifs'));
    return out;
  }
  const fs = w.flexible_start[0], pr = w.pause_resume[0];
  const runMs = w.profile_slots * 300e3;
  const start = Date.parse(w.first_slot);
  let end = start + runMs;
  if (fs) end = Math.max(end, Date.parse(fs.best_start) + runMs, Date.parse(fs.worst_start) + runMs);
  if (pr) end = Math.max(end, Date.parse(pr.deadline));
  out.push(el('div', { class: 'cards', 'data-scope': 'whatif' },
    card('As run', qty(fs ? fs.actual_co2e_g : pr ? pr.actual_co2e_g : null, 'g CO₂e', 'actual_co2e_g'), `${num(w.energy_kwh)} kWh facility energy`),
    fs ? card(`Best Flexible Start (+${windowH} h)`, qty(fs.best_co2e_g, 'g CO₂e', 'best_co2e_g'), `saves ${num(fs.saving_co2e_g)} g CO₂e (${num(fs.saving_pct)} %), start ${when(fs.best_start)}`) : null,
    pr ? card(`Pause and Resume (${factor} ×)`, qty(pr.co2e_g, 'g CO₂e', 'pause_co2e_g'), `saves ${num(pr.saving_co2e_g)} g CO₂e (${num(pr.saving_pct)} %), paused ${duration(pr.paused_minutes)}`) : null));
  for (const u of w.unavailable) out.push(notice('', `Not computed: ${u}`));
  // The intensity curve: the instance's own 5-minute marginal intensity where it has data.
  try {
    const s = await get(`/v1/instances/${encodeURIComponent(d.instance_ids[0])}/series?from=${start}&to=${end}&step=5m`);
    const xs = s.points.map((p) => Date.parse(p.start) / 1000);
    out.push(timeChart({ id: 'chart-whatif', title: `Marginal intensity, ${w.region}`, unit: 'g CO₂e/kWh', xs, series: [{ label: 'marginal', values: s.points.map((p) => p.intensity_g_per_kwh) }] }));
  } catch (e) {
    out.push(inlineProblem(e, 'The intensity curve'));
  }
  const lanes = [{ label: 'as run', runs: [[start, start + runMs]] }];
  if (fs) lanes.push({ label: `best start (+${windowH} h)`, runs: [[Date.parse(fs.best_start), Date.parse(fs.best_start) + runMs]] });
  if (pr) lanes.push({ label: `pause & resume (${factor} ×)`, runs: pr.schedule.map((r) => [Date.parse(r.from), Date.parse(r.to)]) });
  out.push(el('figure', { class: 'chart', id: 'whatif-lanes' }, el('h3', {}, 'When the run works'), scheduleLanes({ from: start, to: end, lanes })));
  out.push(el('p', { class: 'muted' }, `Intensity: ${w.basis}; source ${w.intensity_source}${w.intensity_replayed ? ' (historical data replayed on a shifted clock)' : ''}; known until ${when(w.intensity_known_until)}.`));
  if (pr) {
    out.push(el('details', {}, el('summary', {}, `Pause and Resume schedule (${pr.schedule.length} runs)`),
      el('table', {}, el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Works from (UTC)'), el('th', { scope: 'col' }, 'until (UTC)'))),
        el('tbody', {}, pr.schedule.map((r) => el('tr', {}, el('td', {}, when(r.from)), el('td', {}, when(r.to))))))));
  }
  return out;
}

// ---- statements -----------------------------------------------------------------------

async function download(period, ext, status) {
  try {
    const b = await blob(`/v1/statements/${period}.${ext}`);
    const url = URL.createObjectURL(b);
    const a = el('a', { href: url, download: `wattprint-statement-${period}.${ext}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (e) {
    status.replaceChildren(inlineProblem(e, `The ${ext.toUpperCase()} statement`));
  }
}

async function statementsView() {
  const list = await get('/v1/statements');
  const status = el('div', { 'aria-live': 'polite' });
  const out = [el('h1', {}, 'Statements'),
    el('p', { class: 'muted' }, 'Monthly carbon statements, like a bill: preliminary during the month, issued once it has ended and never changed afterwards (later corrections appear as adjustments on a later month).')];
  if (!list.statements.length) {
    out.push(notice('empty', 'no statements yet. The current month’s preliminary statement appears once your instances have usage.'));
    return out;
  }
  out.push(el('table', { id: 'statements' },
    el('thead', {}, el('tr', {}, ...['Month', 'Status', 'Issued (UTC)', 'Content SHA-256', 'Download'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, list.statements.map((s) => el('tr', { 'data-period': s.period },
      el('th', { scope: 'row' }, s.period),
      el('td', {}, s.status),
      el('td', {}, s.issued_at ? when(s.issued_at) : 'not yet'),
      el('td', {}, s.content_sha256 ? el('code', { title: s.content_sha256 }, `${s.content_sha256.slice(0, 16)}…`) : '—'),
      el('td', {}, ...['pdf', 'csv', 'json'].map((ext) => el('button', { type: 'button', 'data-download': ext, 'aria-label': `Download ${s.period} as ${ext.toUpperCase()}`, onclick: () => download(s.period, ext, status) }, ext.toUpperCase()))))))),
  status);
  return out;
}

// ---- restatements ---------------------------------------------------------------------

async function restatementsView(params) {
  const days = ['1', '7', '30'].includes(params.get('days')) ? Number(params.get('days')) : 7;
  const to = Date.now(), from = to - days * 24 * HOUR;
  const sel = el('select', { id: 'days' }, ...[1, 7, 30].map((d) => el('option', { value: String(d), selected: d === days }, `last ${d} day${d > 1 ? 's' : ''}`)));
  const form = el('form', { class: 'controls' }, el('label', { for: 'days' }, 'Range', sel), el('button', { type: 'submit', class: 'primary' }, 'Show'));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); location.hash = `#/restatements?days=${sel.value}`; });
  const out = [el('h1', {}, 'Restatements'),
    el('p', { class: 'muted' }, 'Intervals whose carbon intensity was replaced when better data arrived (a forecast or the average fallback by the actual), and how much each moved your emissions. Issued statements are not changed: these show up as adjustments on a later one.'),
    form];
  let r;
  try {
    r = await get(`/v1/restatements?from=${from}&to=${to}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 400) {
      out.push(notice('error', `Too many restatements to list at once: ${e.detail || e.title}. Choose a shorter range.`));
      return out;
    }
    throw e;
  }
  const t = r.totals;
  out.push(el('div', { class: 'cards', 'data-scope': 'restatements', 'data-from': String(from), 'data-to': String(to) },
    card('Intervals restated', String(t.intervals)),
    card('IT emissions moved by', qty(t.it_co2e_delta_g, 'g CO₂e', 'it_co2e_delta_g')),
    card('Facility emissions moved by', qty(t.facility_co2e_delta_g, 'g CO₂e', 'facility_co2e_delta_g'))));
  if (!r.restatements.length) {
    out.push(notice('empty', `no interval was restated in the ${sel.selectedOptions[0].textContent}: every interval kept the intensity it was first joined with. Choose a longer range to look further back.`));
    return out;
  }
  const iv = (i) => (i ? `${num(i.value_g_per_kwh)} g CO₂e/kWh, ${i.kind}${i.replayed ? ' (replayed)' : ''}, ${i.source}` : 'none');
  const shown = r.restatements.slice(0, 500);
  out.push(el('table', { id: 'restatements' },
    el('caption', {}, shown.length < r.restatements.length ? `The first ${shown.length} of ${r.restatements.length} restatements (the totals above count all)` : `${r.restatements.length} restatements`),
    el('thead', {}, el('tr', {}, ...['Interval (UTC)', 'Instance / GPU', 'Before', 'After', 'Why', 'IT emissions change (g CO₂e)'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, shown.map((x) => el('tr', {},
      el('td', {}, when(x.bucket_start)), el('td', {}, `${x.instance} / ${x.gpu.slice(0, 12)}…`),
      el('td', {}, iv(x.previous)), el('td', {}, iv(x.current)), el('td', {}, x.reason),
      el('td', { class: 'num' }, `${x.it_co2e_delta_g >= 0 ? '+' : ''}${num(x.it_co2e_delta_g)} g CO₂e`))))));
  return out;
}

// ---- methodology ----------------------------------------------------------------------

async function methodologyView() {
  const to = Date.now(), from = to - 30 * 24 * HOUR;
  const month = new Date(to).toISOString().slice(0, 7);
  const [summary, instances, statement, workloads] = await Promise.all([
    get(`/v1/summary?from=${from}&to=${to}`),
    all('/v1/instances?limit=1000', 'instances'),
    get(`/v1/statements/${month}.json`).catch(() => null),
    get('/v1/workloads?limit=1').catch(() => null),
  ]);
  // The marginal series' provider is named by a what-if (the API's only answer that says it):
  // the newest workload's, at the cheapest window and factor.
  const newest = workloads && workloads.workloads[0];
  const marginal = newest
    ? await get(`/v1/workloads/${encodeURIComponent(newest.id)}/whatif?window_hours=1&factor=1.25`).catch(() => null)
    : null;
  const t = summary.totals, p = t.provenance;
  const regions = [...new Set(instances.map((i) => i.region))];
  return [el('h1', {}, 'Methodology'),
    el('h2', {}, 'Your numbers over the last 30 days'),
    el('dl', { class: 'facts', 'data-scope': 'methodology', 'data-from': String(from), 'data-to': String(to) },
      el('dt', {}, 'Energy'), el('dd', {}, qty(t.it_energy_kwh, 'kWh', 'it_energy_kwh'), ` of GPU (IT) energy; ${pct(measuredShare(t))} measured from the GPU energy counter, `,
        qty(t.estimated_energy_mj / 3.6e9, 'kWh', 'estimated_energy_kwh'), ' estimated by integrating power over gaps.'),
      el('dt', {}, 'Intensity'), el('dd', {}, `${p.intervals_actual} GPU-intervals of 5 minutes joined with an actual marginal intensity, ${p.intervals_forecast} with a forecast, ${p.intervals_fallback} with the region’s average as fallback, ${p.intervals_missing_intensity} with none (their energy, ${num(p.energy_without_intensity_mj / 3.6e9)} kWh, has no emissions counted).`),
      el('dt', {}, 'Replayed'), el('dd', {}, p.intervals_replayed_intensity ? `${p.intervals_replayed_intensity} intervals used a historical intensity series replayed on a shifted clock (a demo): real data, but not the grid’s at that time.` : 'No interval used replayed intensity.'),
      el('dt', {}, 'Grid regions'), el('dd', {}, regions.join(', ') || 'none'),
      el('dt', {}, 'Marginal intensity from'), el('dd', {}, marginal
        ? `${marginal.intensity_source} for ${marginal.region}${marginal.intensity_replayed ? ' (historical, replayed on a shifted clock)' : ''}, as used by workload “${newest.label}”`
        : 'shown on each workload’s what-if page (no workload yet)'),
      el('dt', {}, 'Average intensity from'), el('dd', {}, statement && statement.location_sources.length ? statement.location_sources.join('; ') : 'not reported for this month'),
      el('dt', {}, 'Statement model'), el('dd', {}, statement ? statement.model_version : 'not available')),
    el('h2', {}, 'How energy is measured'),
    el('p', {}, 'Each GPU’s energy comes from the difference of its NVML energy counter between two readings, split over 5-minute intervals in proportion to time. Where the counter cannot be read, energy is estimated by integrating power readings and marked as estimated. Idle energy is real energy and belongs to the instance that holds the GPU.'),
    el('h2', {}, 'How emissions are computed'),
    el('p', {}, 'Emissions are the sum over 5-minute intervals of energy × the grid’s marginal carbon intensity (g CO₂e/kWh) at the datacenter’s location — never total energy × mean intensity. Facility emissions multiply by the region’s PUE. Beside them, the same energy on the grid’s average (location-based) intensity is shown. Each interval says whether its intensity was actual, a forecast, or the average used as fallback; forecasts are restated once actuals arrive.'),
    el('h2', {}, 'Software Carbon Intensity'),
    el('p', {}, 'SCI = (E × I + M) / R: operational emissions plus the embodied share M of the GPUs over the time used, per functional unit R that you set on each workload (ISO/IEC 21031:2024).'),
    el('h2', {}, 'What-ifs'),
    el('p', {}, 'Flexible Start shifts the whole run to the best start within a window; Pause and Resume runs only in the cleanest 5-minute slots and finishes within a factor of the original duration (Dodge et al., “Measuring the Carbon Intensity of AI in Cloud Instances”, FAccT 2022).')];
}
