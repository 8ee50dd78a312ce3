// Charts: uPlot (vendored) for time series, a small SVG for sparklines and schedule lanes.
// Series differ by line style as well as colour, and every chart is titled with its unit.

import { el, num, when } from './format.js';

const STYLES = [
  { stroke: '#0a5bd3', dash: undefined, width: 2 },
  { stroke: '#b35900', dash: [8, 4], width: 2 },
  { stroke: '#116329', dash: [2, 3], width: 2 },
  { stroke: '#6e40c9', dash: [12, 3, 2, 3], width: 2 },
];

/**
 * A titled time-series chart. `xs`: x values in Unix seconds; `series`: `{label, values}`
 * in `unit`. Returns the figure element (the chart draws once it is in the page).
 */
export function timeChart({ title, unit, xs, series, id, bars }) {
  const box = el('div', { class: 'plot' });
  const fig = el('figure', { class: 'chart', id, 'aria-label': `${title}, ${unit}` },
    el('h3', {}, `${title} (${unit})`), box);
  const opts = {
    width: 800,
    height: 220,
    scales: { x: { time: true } },
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'),
    axes: [
      {},
      { label: unit, size: 70, values: (u, vals) => vals.map((v) => num(v)) },
    ],
    series: [
      { label: 'time (UTC)', value: (u, v) => (v === null ? '—' : when(v * 1000)) },
      ...series.map((s, i) => ({
        label: s.label,
        ...STYLES[i % STYLES.length],
        paths: bars && i === 0 ? uPlot.paths.stepped({ align: 1 }) : undefined,
        value: (u, v) => (v === null || v === undefined ? '—' : `${num(v)} ${unit}`),
        spanGaps: false,
      })),
    ],
  };
  const data = [xs, ...series.map((s) => s.values)];
  requestAnimationFrame(() => {
    const width = Math.max(320, Math.min(1150, box.clientWidth || 800));
    const chart = new uPlot({ ...opts, width }, data, box);
    fig.chart = chart;
  });
  return fig;
}

/** A power sparkline as SVG, with its mean and max in words beside it (no colour needed). */
export function sparkline(values, { width = 180, height = 36, label }) {
  const svgNS = 'http://www.w3.org/2000/svg'; // a namespace name, not a network address
  const svg = document.createElementNS(svgNS, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const pts = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined);
  if (pts.length > 1) {
    const max = Math.max(...pts.map(([, v]) => v)) || 1;
    const n = values.length - 1 || 1;
    let d = '';
    let prev = -2;
    for (const [i, v] of pts) {
      const x = (i / n) * (width - 2) + 1;
      const y = height - 2 - (v / max) * (height - 4);
      d += `${i === prev + 1 ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`;
      prev = i;
    }
    const path = document.createElementNS(svgNS, 'path');
    path.setAttribute('d', d);
    svg.append(path);
  }
  return svg;
}

/**
 * The what-if chart: the marginal intensity curve (uPlot) and, under it, lanes that show when
 * the run worked — as run, at the best Flexible Start, and on the Pause-and-Resume schedule —
 * told apart by their row and label, not by colour.
 */
export function scheduleLanes({ from, to, lanes, width = 1000 }) {
  const svgNS = 'http://www.w3.org/2000/svg'; // a namespace name, not a network address
  const rowH = 22, labelW = 190, height = lanes.length * rowH + 18;
  const svg = document.createElementNS(svgNS, 'svg');
  svg.setAttribute('class', 'lanes');
  svg.setAttribute('width', '100%');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', lanes.map((l) => `${l.label}: ${l.runs.map((r) => `${when(r[0])} to ${when(r[1])}`).join(', ')}`).join('; '));
  const span = Math.max(1, to - from);
  const xOf = (t) => labelW + ((t - from) / span) * (width - labelW - 4);
  lanes.forEach((lane, i) => {
    const y = i * rowH + 4;
    const text = document.createElementNS(svgNS, 'text');
    text.setAttribute('x', 0);
    text.setAttribute('y', y + 13);
    text.textContent = lane.label;
    svg.append(text);
    for (const [a, b] of lane.runs) {
      const r = document.createElementNS(svgNS, 'rect');
      r.setAttribute('x', xOf(a).toFixed(1));
      r.setAttribute('y', y);
      r.setAttribute('width', Math.max(1.5, xOf(b) - xOf(a)).toFixed(1));
      r.setAttribute('height', rowH - 8);
      r.setAttribute('fill', ['#1b1f24', '#0a5bd3', '#116329'][i % 3]);
      svg.append(r);
    }
  });
  const axis = document.createElementNS(svgNS, 'text');
  axis.setAttribute('x', labelW);
  axis.setAttribute('y', height - 2);
  axis.textContent = `${when(from)} → ${when(to)}`;
  svg.append(axis);
  return svg;
}
