// Drives Debian's chromium (Playwright, playwright-core) through every portal view against a
// running `wattprint up`, and prints one JSON report on stdout: the numbers each view shows
// (exact values from `data-value`, and the text people read), what it found (not-found
// pages, admin actions), console errors, and timings (largest contentful paint, time to an
// instance's 30-day chart). cli/tests/it/portal.rs starts `up`, runs this and compares the
// numbers with the API's. Screenshots go to $PORTAL_ARTIFACTS.
//
// Environment: PORTAL_API, PORTAL_ADMIN_TOKEN, PORTAL_READER_TOKEN, PORTAL_INSTANCE,
// PORTAL_OTHER_INSTANCE, PORTAL_WORKLOAD, PORTAL_ARTIFACTS, PORTAL_CONSOLE_PORT (a free port: the
// console page that frames the portal, as http://localhost:PORT, which the server allows), CHROMIUM (default /usr/bin/chromium).

import { createServer } from 'node:http';
import { collect, env, go, largestContentfulPaint, start, timeChart30d } from './browser.mjs';

const api = env('PORTAL_API');
const admin = env('PORTAL_ADMIN_TOKEN');
const reader = env('PORTAL_READER_TOKEN');
const instance = env('PORTAL_INSTANCE');
const other = env('PORTAL_OTHER_INSTANCE');
const workload = env('PORTAL_WORKLOAD');
const artifacts = env('PORTAL_ARTIFACTS');

const report = { views: {}, checks: {}, console_errors: [], timings: {} };

const { browser, newPage, shot } = await start(report, artifacts);

// --- admin: first paint, every view ----------------------------------------------------
const page = await newPage();
await page.goto(`${api}/portal/#token=${admin}`);
await page.waitForSelector('main[data-ready]', { timeout: 60_000 });
report.timings.lcp_ms = await largestContentfulPaint(page);
report.checks.fragment_cleared = !page.url().includes('token=');
report.checks.token_in_session = await page.evaluate(() => !!sessionStorage.getItem('wattprint.token'));
// Keyboard: the first Tab from the page lands on the first navigation link.
await page.keyboard.press('Tab');
report.checks.first_tab_target = await page.evaluate(() => document.activeElement?.textContent || '');
report.views.instances = await collect(page);
await shot(page, '01-instances');

// An instance's 30-day chart, timed from the navigation to the drawn canvases.
report.timings.chart_30d_ms = await timeChart30d(page, instance);
report.views.instance_30d = await collect(page);
await shot(page, '02-instance-30d-5m');

for (const [range, step] of [['24h', '1h'], ['7d', '1d'], ['1h', 'raw'], ['6h', '5m']]) {
  await go(page, `#/instances/${encodeURIComponent(instance)}?range=${range}&step=${step}`);
  report.views[`instance_${range}_${step}`] = await collect(page);
  await shot(page, `03-instance-${range}-${step}`);
}

// The range picker with the keyboard: choose "last 7 days" and step "1 hour", Tab to Show, Enter.
await page.focus('#range');
await page.selectOption('#range', '7d');
await page.selectOption('#step', '1h');
const beforeKey = await page.evaluate(() => document.getElementById('main').dataset.ready);
await page.focus('#step');
await page.keyboard.press('Tab');
await page.keyboard.press('Enter');
await page.waitForFunction((b) => document.getElementById('main').dataset.ready !== b, beforeKey);
report.checks.picker_hash = await page.evaluate(() => location.hash);

await go(page, '#/workloads');
report.views.workloads = await collect(page);
await shot(page, '04-workloads');
await go(page, `#/workloads/${encodeURIComponent(workload)}`);
report.views.workload = await collect(page);
await shot(page, '05-workload');
await go(page, `#/workloads/${encodeURIComponent(workload)}/whatif?window=6&factor=2`);
report.views.whatif = await collect(page);
await shot(page, '06-whatif');
await go(page, '#/statements');
report.views.statements = await collect(page);
const [download] = await Promise.all([
  page.waitForEvent('download', { timeout: 30_000 }),
  page.click('tbody tr:first-child [data-download="csv"]'),
]);
report.checks.download_name = download.suggestedFilename();
report.checks.download_bytes = (await (await download.createReadStream()).toArray()).reduce((n, b) => n + b.length, 0);
await shot(page, '07-statements');
await go(page, '#/restatements?days=7');
report.views.restatements = await collect(page);
await shot(page, '07b-restatements');
await go(page, '#/methodology');
report.views.methodology = await collect(page);
await shot(page, '08-methodology');

// Another tenant's instance: a not-found page and none of its data.
await go(page, `#/instances/${encodeURIComponent(other)}?range=30d&step=5m`);
report.views.other_instance = await collect(page);
await shot(page, '09-other-tenant-instance');
await go(page, '#/no-such-view');
report.views.unknown = await collect(page);

// --- admin actions through the forms: label the workload, create another ------------------
await go(page, `#/workloads/${encodeURIComponent(workload)}`);
await page.fill('#labels', 'team=ml\nrun=browser');
await page.click('#labels-form button[type="submit"]');
await page.getByText('Labels saved.').waitFor({ timeout: 30_000 });
await go(page, '#/workloads');
await page.fill('#wl-label', 'made in the browser');
await page.check(`#create-workload input[value="${instance}"]`);
const beforeCreate = await page.evaluate(() => document.getElementById('main').dataset.ready);
await page.click('#create-workload button[type="submit"]');
await page.waitForFunction((b) => document.getElementById('main').dataset.ready !== b, beforeCreate, { timeout: 30_000 });
report.views.created = await collect(page);
await shot(page, '13-created-workload');

// --- a reader sees no admin actions ---------------------------------------------------
const rpage = await newPage();
await rpage.goto(`${api}/portal/#token=${reader}`);
await rpage.waitForSelector('main[data-ready]', { timeout: 60_000 });
await go(rpage, '#/workloads');
report.views.reader_workloads = await collect(rpage);
await shot(rpage, '10-reader-workloads');
await go(rpage, `#/workloads/${encodeURIComponent(workload)}`);
report.views.reader_workload = await collect(rpage);
await shot(rpage, '11-reader-workload');

// --- embedded in a cloud console's iframe: shown for an allowed origin, refused otherwise ----
// The console is a page on this machine (a public origin could not frame a loopback one:
// Chromium's local network access rules): http://localhost:PORT is allowed by the server's
// portal_frame_ancestors, http://127.0.0.1:PORT (the same server, another origin) is not.
const consolePort = Number(env('PORTAL_CONSOLE_PORT'));
const consolePage = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><title>Cloud console</title><h1>Console</h1>
    <iframe id="portal" title="Carbon footprint" width="1200" height="760"
      src="${api}/portal/#token=${reader}"></iframe>`);
});
await new Promise((resolve) => consolePage.listen(consolePort, '127.0.0.1', resolve));
// Chromium logs the refused frame as a console error: expected on this page.
const cpage = await newPage(true);
await cpage.goto(`http://localhost:${consolePort}/console.html`);
const framed = cpage.frameLocator('#portal');
await framed.locator('main[data-ready]').waitFor({ timeout: 60_000 });
report.checks.embedded_h1 = await framed.locator('main h1').first().textContent();
report.checks.embedded_rows = await framed.locator('main tbody tr').count();
await shot(cpage, '14-embedded-in-console');
await cpage.goto(`http://127.0.0.1:${consolePort}/console.html`);
report.checks.stranger_frame_shows_portal = await framed.locator('main[data-ready]')
  .waitFor({ timeout: 5000 }).then(() => true, () => false);
consolePage.close();

// --- without a token, and with a bad one: sentences, not bodies ----------------------------
// The API's 401s to the bad token show in the console as failed loads: expected there.
const npage = await newPage(true);
await npage.goto(`${api}/portal/`);
await npage.waitForSelector('main[data-ready]', { timeout: 60_000 });
report.views.signed_out = await collect(npage);
await npage.goto(`${api}/portal/#token=ey.not.valid`);
await npage.reload();
await npage.waitForSelector('main[data-ready]', { timeout: 60_000 });
report.views.bad_token = await collect(npage);
await shot(npage, '12-bad-token');

await browser.close();
process.stdout.write(`${JSON.stringify(report)}\n`);
