// The portal's entry: adopt the token (from the fragment, or the identity provider's answer),
// route `#/…` to a view, render problems as sentences.

import { adoptTokenFromFragment, claims, token, ApiError } from './api.js';
import { completeSignIn, isSignInAnswer, oidcConfig, signOutEverywhere, SignInError } from './signin.js';
import { el } from './format.js';
import * as views from './views.js';

const main = document.getElementById('main');

function parseRoute() {
  const raw = location.hash.replace(/^#/, '') || '/instances';
  const [path, query] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query || '') };
}

function markNav(section) {
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function showWho() {
  const who = document.getElementById('who');
  who.replaceChildren();
  const c = claims();
  if (!c) return;
  const roles = Array.isArray(c.roles) && c.roles.length ? c.roles.join(', ') : 'reader';
  who.append(`Tenant ${c.tenant || c.sub} (${roles}) `,
    el('button', { type: 'button', onclick: () => signOutEverywhere().then((away) => { if (!away) route(); }) }, 'Sign out'));
}

/** A problem as a page that says what happened and what to do; never a raw body or trace. */
export function problemPage(e, oidc) {
  if (e instanceof SignInError) return views.signInFailed(e, oidc);
  const status = e instanceof ApiError ? e.status : -1;
  if (status === 404) return views.notFound(e.detail);
  const what = {
    0: ['The service cannot be reached.', 'Check your network connection, then reload the page.'],
    401: ['Your sign-in has expired or is not valid.', oidc ? 'Sign in again.' : 'Open the portal again from your cloud console (or, on a demo, from the URL `wattprint up` printed).'],
    403: ['Your role does not allow this.', 'Ask a tenant admin to do it, or to give you the admin role.'],
    408: ['The request took too long.', 'Choose a shorter time range or a coarser step and try again.'],
    429: ['Too many requests at once.', 'Wait a few seconds, then reload the page.'],
    503: ['This part of the service is not available right now.', 'Try again later; if it persists, tell your cloud operator.'],
  }[status] || (status >= 500
    ? ['The service failed to answer.', 'Try again in a moment; if it persists, tell your cloud operator.']
    : ['The request was not accepted.', 'Check what you entered and try again.']);
  const detail = e instanceof ApiError && e.detail && status >= 400 && status < 500 ? e.detail : null;
  return [el('h1', {}, 'Something went wrong'),
    el('div', { class: 'notice error', role: 'alert' }, `${what[0]} ${what[1]}`, detail ? el('p', {}, `Details: ${detail}`) : null),
    status === 401 && oidc ? views.signInButton() : null];
}

let generation = 0;
// A sign-in that failed, shown once in place of the view.
let signInProblem = null;

export async function route() {
  const mine = ++generation;
  showWho();
  const { parts, params } = parseRoute();
  markNav(parts[0] || 'instances');
  let nodes;
  if (signInProblem) {
    nodes = problemPage(signInProblem, await oidcConfig());
    signInProblem = null;
  } else if (!token()) {
    nodes = views.signedOut(await oidcConfig());
  } else {
    main.replaceChildren(el('p', { class: 'loading', 'aria-busy': 'true' }, 'Loading…'));
    try {
      nodes = await views.render(parts, params);
    } catch (e) {
      if (!(e instanceof ApiError)) console.error(e);
      nodes = problemPage(e, e instanceof ApiError && e.status === 401 ? await oidcConfig() : null);
    }
    if (mine !== generation) return; // a newer navigation won
  }
  main.replaceChildren(...[nodes].flat());
  document.title = `${main.querySelector('h1')?.textContent || 'Portal'} · Wattprint`;
  main.dataset.view = parts.join('/') || 'instances';
  main.dataset.ready = String(mine);
  document.dispatchEvent(new CustomEvent('portal:ready', { detail: main.dataset.view }));
}

/** Takes a token handed over in the fragment or answered by the identity provider. */
async function signIn() {
  adoptTokenFromFragment();
  if (!isSignInAnswer()) {
    // Back from the provider's sign-out (`?state=…`): nothing to keep in the address.
    if (location.search) history.replaceState(null, '', location.pathname + location.hash);
    return;
  }
  try {
    const view = await completeSignIn();
    history.replaceState(null, '', location.pathname + view);
  } catch (e) {
    if (!(e instanceof SignInError)) console.error(e);
    signInProblem = e instanceof SignInError ? e : new SignInError('The sign-in could not be completed.');
  }
}

window.addEventListener('hashchange', () => {
  // An embedding console may hand over a fresh short-lived token the same way.
  adoptTokenFromFragment();
  route().then(() => main.focus({ preventScroll: true }));
});
signIn().then(route);
