// Sign-in through the identity provider, for people who do not come from a cloud console:
// OpenID Connect authorization code with PKCE, the portal a public client (no secret), by the
// vendored oidc-client-ts (state, S256 challenge, code exchange). The server names the
// provider in /portal/config.json. The provider's answer (this page with ?code&state&iss) is
// removed from the address at once, checked — state and PKCE by the library, the issuer here
// (RFC 9207 `iss` and the ID token's `iss`) — and exchanged; only the access token is kept,
// in the tab's sessionStorage, as any other token.

import { adoptToken, decodeJwt, idToken, signOut } from './api.js';

/** A sign-in that failed: what happened and what to do, in words. */
export class SignInError extends Error {
  constructor(what, next) {
    super(what);
    this.next = next || 'Sign in again.';
  }
}

let config = null;
/** The identity provider the server configured, or null (then tokens come from a console). */
export function oidcConfig() {
  config ??= fetch('config.json', { cache: 'no-store' })
    .then((r) => (r.ok ? r.json() : { oidc: null }))
    .then((c) => c.oidc || null)
    .catch(() => null);
  return config;
}

let library = null;
/** oidc-client-ts, loaded only when someone signs in or out (not on every page view). */
function oidcLibrary() {
  library ??= new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = 'vendor/oidc-client-ts/oidc-client-ts.min.js';
    script.onload = () => resolve(window.oidc);
    script.onerror = () => {
      library = null;
      reject(new SignInError('The sign-in code could not be loaded.', 'Check your connection and reload the page.'));
    };
    document.head.append(script);
  });
  return library;
}

async function client(cfg) {
  const lib = await oidcLibrary();
  const here = `${location.origin}${location.pathname}`;
  const resource = cfg.resource ? { resource: cfg.resource } : {};
  const client = new lib.OidcClient({
    authority: cfg.issuer,
    // The endpoints come from the server: no discovery document is fetched.
    metadata: {
      issuer: cfg.issuer,
      authorization_endpoint: cfg.authorization_endpoint,
      token_endpoint: cfg.token_endpoint,
      end_session_endpoint: cfg.end_session_endpoint || undefined,
    },
    client_id: cfg.client_id,
    redirect_uri: here,
    post_logout_redirect_uri: here,
    response_type: 'code',
    response_mode: 'query',
    scope: cfg.scopes,
    loadUserInfo: false,
    stateStore: new lib.WebStorageStateStore({ store: sessionStorage, prefix: 'wattprint.oidc.' }),
    extraQueryParams: resource,
    extraTokenParams: resource,
  });
  return { lib, client };
}

/** Sends the browser to the identity provider; `view` is where to land once signed in. */
export async function beginSignIn(view) {
  const cfg = await oidcConfig();
  if (!cfg) throw new SignInError('This portal has no identity provider configured.', 'Open it from your cloud console.');
  const { client: c } = await client(cfg);
  const request = await c.createSigninRequest({ state: { view: view || '#/instances' } });
  location.assign(request.url);
}

/** Whether the address is the identity provider's answer to a sign-in. */
export function isSignInAnswer() {
  const q = new URLSearchParams(location.search);
  return q.has('state') && (q.has('code') || q.has('error'));
}

/** Completes the sign-in the address answers; resolves to the view to open. */
export async function completeSignIn() {
  const answer = location.href;
  const params = new URLSearchParams(location.search);
  // The code leaves the address (and the history) at once, used or not.
  history.replaceState(null, '', location.pathname);
  const cfg = await oidcConfig();
  if (!cfg) throw new SignInError('This portal has no identity provider configured, so it cannot take a sign-in answer.', 'Open it from your cloud console.');
  const iss = params.get('iss');
  if (iss !== null && iss !== cfg.issuer) {
    throw new SignInError(`The sign-in answer came from another identity provider (${iss}) than this portal's (${cfg.issuer}), so it was refused.`);
  }
  const { lib, client: c } = await client(cfg);
  let response;
  try {
    response = await c.processSigninResponse(answer);
  } catch (e) {
    throw explain(e, lib);
  }
  const id = decodeJwt(response.id_token);
  if (!id || id.iss !== cfg.issuer) {
    throw new SignInError(`The identity token was issued by ${id?.iss ?? 'no known issuer'}, not by this portal's identity provider (${cfg.issuer}), so it was refused.`);
  }
  if (!response.access_token) throw new SignInError('The identity provider answered without an access token.', 'Ask your administrator to check the portal\'s client at the identity provider.');
  adoptToken(response.access_token, response.id_token);
  return response.userState?.view || '#/instances';
}

function explain(e, lib) {
  if (e instanceof lib.ErrorResponse) {
    return new SignInError(`The identity provider did not sign you in: ${e.error_description || e.error}.`);
  }
  const message = String(e?.message || e);
  if (/no matching state/i.test(message) || /state does not match/i.test(message)) {
    return new SignInError('This sign-in answer does not belong to a sign-in started in this tab (its state is unknown or was already used), so it was refused.');
  }
  if (e instanceof TypeError) {
    return new SignInError('The identity provider could not be reached to finish the sign-in.', 'Check your connection, then sign in again.');
  }
  return new SignInError(`The sign-in could not be completed (${message}).`);
}

/** Forgets the tokens; with an `end_session_endpoint`, ends the provider's session too. */
export async function signOutEverywhere() {
  const hint = idToken();
  signOut();
  const cfg = await oidcConfig();
  if (!cfg?.end_session_endpoint || !hint) return false;
  const { client: c } = await client(cfg);
  const request = await c.createSignoutRequest({ id_token_hint: hint });
  location.assign(request.url);
  return true;
}
