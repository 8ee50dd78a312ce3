// The portal's sign-in through a real OpenID provider (idp.mjs), in Debian's chromium: from the
// signed-out page through the provider's login and consent back to the portal, signed in; a
// user of another tenant; sign-out; and answers that must be refused (a tampered state, another
// issuer, a denied consent). Prints one JSON report on stdout (views as portal.mjs collects
// them, the authorization request's parameters, the tokens the page holds, checks);
// cli/tests/it/portal_oidc.rs compares it with the API. Screenshots go to $PORTAL_ARTIFACTS.
//
// Environment: PORTAL_API, PORTAL_ISSUER, PORTAL_ARTIFACTS, CHROMIUM (default /usr/bin/chromium).

import { collect, env, go, start } from './browser.mjs';

const api = env('PORTAL_API');
const issuer = env('PORTAL_ISSUER');
const artifacts = env('PORTAL_ARTIFACTS');

const report = { views: {}, checks: {}, console_errors: [], tokens: {}, auth_requests: [] };
const { browser, newPage, shot } = await start(report, artifacts);

/** Records each authorization request the browser sends to the provider. */
function watchAuthorization(page) {
  page.on('request', (r) => {
    if (r.url().startsWith(`${issuer}/auth?`)) {
      report.auth_requests.push(Object.fromEntries(new URL(r.url()).searchParams));
    }
  });
}

/** Clicks "Sign in" on the portal and waits for the provider's login form. */
async function toLogin(page) {
  await page.click('#sign-in');
  await page.waitForURL((u) => u.href.startsWith(`${issuer}/interaction/`), { timeout: 30_000 });
  await page.waitForSelector('#login');
}

/** Signs in at the provider as `user` and answers the consent with `decision`. */
async function atProvider(page, user, password, decision, prefix) {
  await page.fill('#login', user);
  await page.fill('#password', password);
  if (prefix) await shot(page, `${prefix}-idp-login`);
  await page.click('#submit-login');
  await page.waitForSelector(`#${decision}`, { timeout: 30_000 });
  if (prefix) await shot(page, `${prefix}-idp-consent`);
  await page.click(`#${decision}`);
  await page.waitForURL((u) => u.href.startsWith(`${api}/portal/`), { timeout: 30_000 });
  await page.waitForSelector('main[data-ready]', { timeout: 60_000 });
}

const session = (page) => page.evaluate(() => ({
  token: sessionStorage.getItem('wattprint.token'),
  id_token: sessionStorage.getItem('wattprint.id_token'),
  oidc_states: Object.keys(sessionStorage).filter((k) => k.startsWith('wattprint.oidc.')).length,
}));

/** Waits until the tenant's total energy stops changing (the replay is wholly stored). */
async function settled(token) {
  const to = Date.now();
  let last = -1;
  let stable = 0;
  for (let i = 0; i < 1200 && stable < 12; i++) {
    const r = await fetch(`${api}/v1/summary?from=${to - 30 * 86_400_000}&to=${to}`, { headers: { authorization: `Bearer ${token}` } });
    if (!r.ok) throw new Error(`summary: HTTP ${r.status}`);
    const total = (await r.json()).totals.it_energy_mj;
    stable = total === last && total > 0 ? stable + 1 : 0;
    last = total;
    await new Promise((res) => setTimeout(res, 500));
  }
}

// --- alice (acme, admin): signed out, the provider, back signed in ---------------------------
const page = await newPage();
watchAuthorization(page);
await page.goto(`${api}/portal/#/instances`);
await page.waitForSelector('main[data-ready]', { timeout: 60_000 });
report.views.signed_out = await collect(page);
await shot(page, '20-oidc-signed-out');
await toLogin(page);
await atProvider(page, 'alice', 'alice-secret', 'allow', '21');
report.checks.landed_url = page.url();
const alice = await session(page);
report.tokens.acme = alice.token;
report.tokens.acme_id = alice.id_token;
report.checks.states_left = alice.oidc_states;
await settled(alice.token);
await go(page, '#/instances?fresh=1');
report.views.instances = await collect(page);
await shot(page, '23-oidc-signed-in-instances');
const instance = await page.evaluate(() => document.querySelector('main [data-instance]')?.dataset.instance);
report.checks.instance = instance;
await go(page, `#/instances/${encodeURIComponent(instance)}?range=6h&step=5m`);
report.views.instance = await collect(page);
await shot(page, '24-oidc-instance');

// Sign-out: the tokens are forgotten and the provider's session ended (its confirmation page).
await page.click('#who button');
await page.waitForURL((u) => u.href.startsWith(`${issuer}/session/end`), { timeout: 30_000 });
await shot(page, '25-idp-sign-out');
await page.click('button[name="logout"]');
await page.waitForURL((u) => u.href.startsWith(`${api}/portal/`), { timeout: 30_000 });
await page.waitForSelector('main[data-ready]', { timeout: 60_000 });
report.views.after_sign_out = await collect(page);
report.checks.after_sign_out_url = page.url();
report.checks.after_sign_out_session = await session(page);
await shot(page, '26-oidc-signed-out-again');

// --- bob (globex, reader): his own tenant only --------------------------------------------
const bpage = await newPage(true); // the API's 404 for acme's instance is a failed load
await bpage.goto(`${api}/portal/`);
await bpage.waitForSelector('main[data-ready]', { timeout: 60_000 });
await toLogin(bpage);
await atProvider(bpage, 'bob', 'bob-secret', 'allow', null);
report.tokens.globex = (await session(bpage)).token;
report.views.bob_instances = await collect(bpage);
await go(bpage, `#/instances/${encodeURIComponent(instance)}?range=6h&step=5m`);
report.views.bob_other_instance = await collect(bpage);
await shot(bpage, '27-oidc-other-tenant-instance');

// --- answers that must be refused ------------------------------------------------------------
const fpage = await newPage(true);
watchAuthorization(fpage);
await fpage.goto(`${api}/portal/`);
await fpage.waitForSelector('main[data-ready]', { timeout: 60_000 });
await toLogin(fpage);
const pending = report.auth_requests[report.auth_requests.length - 1].state;
// A state this tab never sent.
await fpage.goto(`${api}/portal/?code=forged-code&state=${encodeURIComponent(`${pending}x`)}&iss=${encodeURIComponent(issuer)}`);
await fpage.waitForSelector('main[data-ready]', { timeout: 60_000 });
report.views.tampered_state = await collect(fpage);
report.checks.tampered_state_url = fpage.url();
await shot(fpage, '28-oidc-tampered-state');
// The tab's own state, answered by another issuer (a mix-up): refused before any exchange.
await fpage.goto(`${api}/portal/?code=forged-code&state=${encodeURIComponent(pending)}&iss=${encodeURIComponent('http://localhost:1/evil')}`);
await fpage.waitForSelector('main[data-ready]', { timeout: 60_000 });
report.views.wrong_issuer = await collect(fpage);
report.checks.wrong_issuer_session = await session(fpage);
await shot(fpage, '29-oidc-wrong-issuer');
// The user denies the consent at the provider.
await toLogin(fpage);
await atProvider(fpage, 'alice', 'alice-secret', 'deny', null);
report.views.denied = await collect(fpage);
report.checks.denied_session = await session(fpage);
await shot(fpage, '30-oidc-denied');

await browser.close();
process.stdout.write(`${JSON.stringify(report)}\n`);
