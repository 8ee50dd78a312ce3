// What the portal's browser scripts share: Debian's chromium driven by Playwright
// (playwright-core), a page per fresh context whose console errors are reported, in-app
// navigation that waits for the view, and `collect`, which reads every number a view shows
// (exact `data-value` and the text people read) for the Rust tests to compare with the API.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

/** Starts chromium; pages report console errors into `report.console_errors`; screenshots
 * go to `artifacts` (none without). */
export async function start(report, artifacts) {
  if (artifacts) mkdirSync(artifacts, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });

  /** A page in a fresh context; its console errors are reported unless they are expected. */
  async function newPage(errorsExpected = false) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
    // Nothing beyond this machine: a page that reaches further is a failed load (and a console
    // error), never a request out.
    await context.route((url) => !['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname), (route) => route.abort());
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error' && !errorsExpected) report.console_errors.push(m.text()); });
    page.on('pageerror', (e) => report.console_errors.push(`page error: ${e.message}`));
    return page;
  }

  async function shot(page, name) {
    if (!artifacts) return;
    await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
  }

  return { browser, newPage, shot };
}

/** Navigates within the app and waits until the view for `hash` has rendered. */
export async function go(page, hash) {
  const before = await page.evaluate(() => document.getElementById('main').dataset.ready || '0');
  await page.evaluate((h) => { location.hash = h; }, hash);
  await page.waitForFunction((b) => (document.getElementById('main').dataset.ready || '0') !== b, before, { timeout: 60_000 });
  // Charts draw on the next animation frame.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

/** What the view shows: every `[data-field]` with its exact value and text, grouped by row. */
export async function collect(page) {
  return page.evaluate(() => {
    const main = document.getElementById('main');
    const fields = [...main.querySelectorAll('[data-field]')].map((e) => {
      const row = e.closest('[data-instance],[data-workload],[data-period]');
      const scope = e.closest('[data-scope]');
      return {
        field: e.dataset.field,
        value: e.dataset.value === '' ? null : Number(e.dataset.value),
        unit: e.dataset.unit,
        text: e.textContent,
        row: row ? (row.dataset.instance || row.dataset.workload || row.dataset.period) : null,
        scope: scope ? scope.dataset.scope : null,
      };
    });
    const ranged = main.querySelector('[data-from]');
    return {
      view: main.dataset.view,
      h1: main.querySelector('h1')?.textContent || '',
      from: ranged ? Number(ranged.dataset.from) : null,
      to: ranged ? Number(ranged.dataset.to) : null,
      step: ranged?.dataset.step || null,
      fields,
      canvases: main.querySelectorAll('canvas').length,
      sparklines: main.querySelectorAll('svg.spark path').length,
      rows: main.querySelectorAll('tbody tr').length,
      admin_elements: main.querySelectorAll('[data-admin]').length,
      not_found: !!main.querySelector('[data-notfound]'),
      error_notices: [...main.querySelectorAll('.notice.error')].map((n) => n.textContent),
      looks_like_json: /[{[]\s*"[a-z_]+"\s*:/.test(main.innerText),
      text: main.innerText.slice(0, 4000),
    };
  });
}

/** The largest contentful paint of the page's current document, ms (null if none in 5 s). */
export function largestContentfulPaint(page) {
  return page.evaluate(() => new Promise((resolve) => {
    new PerformanceObserver((list) => {
      const e = list.getEntries();
      resolve(e[e.length - 1].startTime);
    }).observe({ type: 'largest-contentful-paint', buffered: true });
    setTimeout(() => resolve(null), 5000);
  }));
}

/** Opens an instance's 30-day 5-minute charts in the app; ms until its power chart is drawn. */
export async function timeChart30d(page, instance) {
  const t0 = await page.evaluate(() => performance.now());
  await go(page, `#/instances/${encodeURIComponent(instance)}?range=30d&step=5m`);
  await page.waitForSelector('#chart-power canvas', { timeout: 60_000 });
  return (await page.evaluate(() => performance.now())) - t0;
}
