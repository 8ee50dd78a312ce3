// Measures the portal in Debian's chromium, as a person opening it would see it: the largest
// contentful paint of the first view, and the time from navigating to an instance's 30-day
// view (5-minute steps) until its chart is drawn — the same measurements portal.mjs reports
// (browser.mjs). For the figures on 30 days × 8 instances:
//
//   wattprint up --gpus 8 --instances 8 --backfill-days 29      # a release build
//   node tests/portal/measure.mjs 'http://127.0.0.1:8080/portal/#token=eyJ…' [INSTANCE]
//
// INSTANCE defaults to the first one the instances view lists. CHROMIUM (default
// /usr/bin/chromium) and MEASURE_RUNS (default 1: each run a fresh browser context, so
// nothing is cached) may be set. Prints two lines per run.

import { go, largestContentfulPaint, start, timeChart30d } from './browser.mjs';

const [url, chosen] = process.argv.slice(2);
if (!url || !url.includes('/portal/')) {
  process.stderr.write('usage: node measure.mjs PORTAL_URL_WITH_TOKEN [INSTANCE_ID]\n');
  process.exit(2);
}
const runs = Number(process.env.MEASURE_RUNS || 1);
const report = { console_errors: [] };
const { browser, newPage } = await start(report, null);
try {
  for (let i = 0; i < runs; i++) {
    const page = await newPage();
    await page.goto(url);
    await page.waitForSelector('main[data-ready]', { timeout: 120_000 });
    const lcp = await largestContentfulPaint(page);
    let instance = chosen;
    if (!instance && (await page.evaluate(() => document.getElementById('main').dataset.view)) !== 'instances') {
      await go(page, '#/instances');
    }
    if (!instance) {
      instance = await page.evaluate(() => document.querySelector('main [data-instance]')?.dataset.instance);
    }
    if (!instance) throw new Error(`no instance on the page: ${await page.innerText('main')}`);
    const chart = await timeChart30d(page, instance);
    process.stdout.write(`largest contentful paint: ${lcp === null ? 'not reported' : `${Math.round(lcp)} ms`}\n`);
    process.stdout.write(`instance 30-day chart drawn: ${Math.round(chart)} ms\n`);
    await page.context().close();
  }
  if (report.console_errors.length) process.stderr.write(`console errors: ${report.console_errors.join('; ')}\n`);
} finally {
  await browser.close();
}
