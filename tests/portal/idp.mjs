// A real OpenID provider for the portal's sign-in test: `oidc-provider` (panva, pinned in
// package-lock.json) on 127.0.0.1, issuer http://localhost:$IDP_PORT. One public client, the
// portal (PKCE required, its redirect URI only); access tokens are JWTs (RS256, a key made at
// start) for the resource $IDP_RESOURCE, carrying the user's `tenant` and `roles` — attributes
// of the user here, as in a real directory, not something the browser asks for. Its own login
// and consent pages (plain forms) stand in for the provider's UI.
//
// Environment: IDP_PORT, IDP_REDIRECT_URI (the portal: http://127.0.0.1:PORT/portal/),
// IDP_RESOURCE (the query API's audience). Prints `idp ready <issuer>` once listening; runs
// until killed. Test users: alice / alice-secret (tenant acme, admin), bob / bob-secret
// (tenant globex, reader).

import Provider, { errors } from 'oidc-provider';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const port = Number(env('IDP_PORT'));
const redirectUri = env('IDP_REDIRECT_URI');
const resource = env('IDP_RESOURCE');
const issuer = `http://localhost:${port}`;

const users = {
  alice: { password: 'alice-secret', tenant: 'acme', roles: ['admin'], name: 'Alice (acme admin)' },
  bob: { password: 'bob-secret', tenant: 'globex', roles: ['reader'], name: 'Bob (globex reader)' },
};

const page = (title, body) => `<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>${title} · Test identity provider</title></head><body><h1>${title}</h1>${body}</body></html>`;

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-idp-1', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'wattprint-portal',
    token_endpoint_auth_method: 'none',
    application_type: 'web',
    redirect_uris: [redirectUri],
    post_logout_redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid'],
  claims: { openid: ['sub'] },
  // The portal's page calls the token endpoint from its own origin.
  clientBasedCORS: (ctx, origin) => origin === new URL(redirectUri).origin,
  findAccount: (ctx, id) => (users[id] ? { accountId: id, claims: () => ({ sub: id }) } : undefined),
  extraTokenClaims: (ctx, token) => {
    const user = users[token.accountId];
    return token.kind === 'AccessToken' && user ? { tenant: user.tenant, roles: user.roles } : undefined;
  },
  // The provider's own pages without its default styling (which loads a web font): nothing
  // here reaches beyond this machine.
  renderError: (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Sign-in problem', `<p>${escape(out.error)}: ${escape(out.error_description || '')}</p>`);
  },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: (ctx, form) => {
        ctx.body = page('Sign out', `${form}<p>Sign out of the test identity provider?</p>
          <button form="op.logoutForm" type="submit" name="logout" value="yes">Yes, sign me out</button>`);
      },
      postLogoutSuccessSource: (ctx) => { ctx.body = page('Signed out', '<p>You are signed out.</p>'); },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          scope: 'wattprint:reader',
          audience: resource,
          accessTokenTTL: 15 * 60,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { AccessToken: 15 * 60, IdToken: 15 * 60, Session: 3600, Interaction: 600, Grant: 3600, AuthorizationCode: 60 },
});

async function form(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

/** The login and consent steps: GET shows the form, POST finishes the step. */
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session } = details;
  const action = `/interaction/${uid}`;
  if (req.method === 'GET') {
    if (prompt.name === 'login') {
      return send(res, 200, page('Sign in', `<p>Client: ${escape(params.client_id)}</p>
        <form method="post" action="${action}">
        <label>User <input id="login" name="login" autocomplete="username"></label>
        <label>Password <input id="password" name="password" type="password"></label>
        <button id="submit-login" type="submit">Sign in</button></form>`));
    }
    return send(res, 200, page('Allow access', `<p>${escape(params.client_id)} asks to read your
      Wattprint data (${escape(params.scope)}).</p>
      <form method="post" action="${action}"><button id="allow" type="submit" name="decision" value="allow">Allow</button>
      <button id="deny" type="submit" name="decision" value="deny">Deny</button></form>`));
  }
  const body = await form(req);
  if (prompt.name === 'login') {
    const user = users[body.get('login')];
    if (!user || user.password !== body.get('password')) {
      return send(res, 200, page('Sign in', `<p role="alert">Wrong user or password.</p>
        <form method="post" action="${action}"><input id="login" name="login"><input id="password" name="password" type="password">
        <button id="submit-login" type="submit">Sign in</button></form>`));
    }
    return provider.interactionFinished(req, res, { login: { accountId: body.get('login') } }, { mergeWithLastSubmission: false });
  }
  if (body.get('decision') !== 'allow') {
    return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the user denied access' }, { mergeWithLastSubmission: false });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const handle = provider.callback();
const server = createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((e) => send(res, 400, page('Sign-in problem', `<p>${escape(e.message)}</p>`)));
    return;
  }
  handle(req, res);
});
server.listen(port, '127.0.0.1', () => process.stdout.write(`idp ready ${issuer}\n`));
