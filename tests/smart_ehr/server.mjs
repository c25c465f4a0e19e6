// A small, test-only "SMART EHR": a SMART App Launch 2.2 authorization server (oidc-provider,
// mounted under /oauth), a token-checking reverse proxy in front of a real FHIR server (/fhir),
// an EHR launch page (/ehr/launch) and test hooks (/test/...). Everything lives in memory and
// listens on 127.0.0.1 only. Synthetic data only; never use it for anything but tests.
//
//   node server.mjs CONFIG.json
//
// See README.md beside this file for the configuration keys and the endpoints.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import process from 'node:process';

import Provider, { errors, interactionPolicy } from 'oidc-provider';

// ---------------------------------------------------------------------------------------------
// Configuration

function loadConfig(path) {
  if (!path) {
    throw new Error('usage: node server.mjs CONFIG.json');
  }
  const raw = JSON.parse(fs.readFileSync(path, 'utf8'));
  if (!Number.isInteger(raw.port) || raw.port <= 0 || raw.port > 65535) {
    throw new Error('config: "port" must be an integer TCP port');
  }
  if (typeof raw.fhir_upstream !== 'string' || !/^https?:\/\//.test(raw.fhir_upstream)) {
    throw new Error('config: "fhir_upstream" must be an http(s) URL');
  }
  if (!Array.isArray(raw.clients) || raw.clients.length === 0) {
    throw new Error('config: "clients" must be a non-empty list');
  }
  const users = raw.users ?? {};
  const defaultUser = raw.default_user ?? Object.keys(users)[0];
  if (!defaultUser || !users[defaultUser]) {
    throw new Error('config: "default_user" must name an entry of "users"');
  }
  const ttl = raw.access_token_ttl ?? 300;
  if (!Number.isInteger(ttl) || ttl <= 0) {
    throw new Error('config: "access_token_ttl" must be a positive integer (seconds)');
  }
  return {
    port: raw.port,
    fhirUpstream: raw.fhir_upstream.replace(/\/+$/, ''),
    clients: raw.clients,
    users,
    defaultUser,
    standalonePatient: raw.standalone_patient ?? null,
    accessTokenTtl: ttl,
    denyScopes: new Set(raw.deny_scopes ?? []),
  };
}

const config = loadConfig(process.argv[2]);
const HOST = '127.0.0.1';
const BASE = `http://${HOST}:${config.port}`;
const ISSUER = `${BASE}/oauth`;
const FHIR_BASE = `${BASE}/fhir`;

// Scopes oidc-provider knows statically (the "OIDC" side of a grant). SMART resource scopes are
// not listed: they are scopes of the resource server FHIR_BASE, accepted by pattern (see below).
const STATIC_SCOPES = [
  'openid', 'fhirUser', 'profile', 'launch', 'launch/patient', 'offline_access', 'online_access',
];
const SMART_SCOPE = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]+)\.(c?r?u?d?s?)$/;

function isSmartResourceScope(scope) {
  const match = SMART_SCOPE.exec(scope);
  return match !== null && match[3] !== '';
}

// Examples advertised in scopes_supported (any scope matching SMART_SCOPE is accepted).
const ADVERTISED_RESOURCE_SCOPES = [
  'patient/*.rs', 'patient/ServiceRequest.rs', 'patient/Patient.rs',
  'user/*.rs', 'user/ServiceRequest.rs', 'user/Task.cu', 'user/Communication.c',
  'user/Patient.rs', 'user/Practitioner.rs',
];

function splitScope(value) {
  return [...new Set((value ?? '').split(' ').filter(Boolean))];
}

function idOf(reference) {
  // "Patient/ada-quill" -> "ada-quill"; a bare id stays as it is.
  if (!reference) return null;
  const parts = String(reference).split('/');
  return parts[parts.length - 1] || null;
}

// ---------------------------------------------------------------------------------------------
// In-memory state

const launches = new Map(); // launch id -> { patient: id | null, user }
const grantContexts = new Map(); // oidc-provider grant id -> { patient: id | null, user }
const issued = { access_tokens: [], refresh_tokens: [] };
const tokenRequests = [];

// ---------------------------------------------------------------------------------------------
// The authorization server

function signingKeys() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: `smart-ehr-${crypto.randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' }] };
}

function clientMetadata(client) {
  const { client_id: clientId, redirect_uris: redirectUris } = client;
  if (typeof clientId !== 'string' || !clientId) {
    throw new Error('config: every client needs a "client_id"');
  }
  if (!Array.isArray(redirectUris) || redirectUris.length === 0) {
    throw new Error(`config: client ${clientId} needs "redirect_uris"`);
  }
  const method = client.token_endpoint_auth_method ?? 'private_key_jwt';
  if (!['private_key_jwt', 'none'].includes(method)) {
    throw new Error(`config: client ${clientId}: token_endpoint_auth_method must be private_key_jwt or none`);
  }
  if (method === 'private_key_jwt' && !client.jwks && !client.jwks_uri) {
    throw new Error(`config: client ${clientId} uses private_key_jwt but has no "jwks"`);
  }
  return {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    ...client,
    token_endpoint_auth_method: method,
  };
}

const redirectOrigins = new Set(
  config.clients.flatMap((c) => c.redirect_uris ?? []).map((u) => URL.parse(u)?.origin).filter(Boolean),
);

function resourceServerScope(ctx) {
  // The scopes the resource server FHIR_BASE "has" for this request: every SMART resource scope
  // in sight (the authorization request, the code or refresh token being redeemed, the grant).
  const seen = new Set();
  const add = (value) => splitScope(value).forEach((s) => { if (isSmartResourceScope(s)) seen.add(s); });
  add(ctx.oidc?.params?.scope);
  const entities = ctx.oidc?.entities ?? {};
  add(entities.AuthorizationCode?.scope);
  add(entities.RefreshToken?.scope);
  add(entities.RotatedRefreshToken?.scope);
  add(entities.Grant?.resources?.[FHIR_BASE]);
  return [...seen].join(' ');
}

async function assertClientAssertion(ctx, claims, header, client) {
  // oidc-provider checks iss, aud, exp, jti (and replay) and the signature; SMART asks more.
  if (claims.sub !== client.clientId) {
    throw new errors.InvalidClientAuth('sub (JWT subject) must be the client_id');
  }
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.exp !== 'number' || claims.exp > now + 300 + 5) {
    throw new errors.InvalidClientAuth('client_assertion exp must be no more than 5 minutes in the future');
  }
  if (!['RS384', 'ES384'].includes(header.alg)) {
    throw new errors.InvalidClientAuth('client_assertion must be signed with RS384 or ES384');
  }
}

const provider = new Provider(ISSUER, {
  clients: config.clients.map(clientMetadata),
  jwks: signingKeys(),
  cookies: {
    keys: [crypto.randomBytes(32).toString('base64url')],
    // Lax (oidc-provider's default), not Strict and not None: the pages of /oauth keep their
    // cookies when navigated inside an iframe of a same-site top-level page (the EHR page on the
    // same host), and plain http needs no Secure flag.
    long: { httpOnly: true, sameSite: 'lax' },
    short: { httpOnly: true, sameSite: 'lax' },
  },
  scopes: STATIC_SCOPES,
  claims: {
    openid: ['sub'],
    fhirUser: ['fhirUser'],
    profile: ['name'],
  },
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    const user = config.users[sub];
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          fhirUser: user.fhirUser ? `${FHIR_BASE}/${user.fhirUser}` : undefined,
          name: user.name,
        };
      },
    };
  },
  clientAuthMethods: ['private_key_jwt', 'none'],
  enabledJWA: {
    clientAuthSigningAlgValues: ['RS384', 'ES384'],
  },
  assertJwtClientAuthClaimsAndHeader: assertClientAssertion,
  clockTolerance: 5,
  pkce: {
    // Every client, confidential or public. oidc-provider 9 supports only S256.
    required: () => true,
  },
  responseTypes: ['code'],
  extraParams: {
    aud(ctx, value) {
      if (value !== FHIR_BASE) {
        throw new errors.InvalidRequest(
          value === undefined
            ? `aud parameter is required and must be ${FHIR_BASE}`
            : `aud must be ${FHIR_BASE} (the FHIR base URL of this EHR)`,
        );
      }
    },
    launch(ctx, value) {
      const scopes = splitScope(ctx.oidc.params.scope);
      if (scopes.includes('launch') && !value) {
        throw new errors.InvalidRequest('launch parameter is required with the launch scope');
      }
      if (value !== undefined && !launches.has(value)) {
        throw new errors.InvalidRequest('unknown launch parameter (not issued by this EHR)');
      }
    },
  },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: false },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf ?? FHIR_BASE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== FHIR_BASE) {
          throw new errors.InvalidTarget(`the only resource served is ${FHIR_BASE}`);
        }
        return {
          scope: resourceServerScope(ctx),
          audience: FHIR_BASE,
          accessTokenTTL: config.accessTokenTtl,
          accessTokenFormat: 'opaque',
        };
      },
    },
  },
  async issueRefreshToken(ctx, client, code) {
    return client.grantTypeAllowed('refresh_token')
      && (code.scopes.has('offline_access') || code.scopes.has('online_access'));
  },
  ttl: {
    AccessToken: () => config.accessTokenTtl,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 14 * 24 * 3600,
    Interaction: 600,
    Session: 24 * 3600,
    Grant: 14 * 24 * 3600,
  },
  clientBasedCORS(ctx, origin) {
    return redirectOrigins.has(origin);
  },
  interactions: {
    policy: interactionPolicy.base(),
    url: (ctx, interaction) => `/oauth/interaction/${interaction.uid}`,
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    const rows = Object.entries(out)
      .map(([k, v]) => `<p><strong>${escapeHtml(k)}</strong>: ${escapeHtml(v)}</p>`).join('');
    ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Synthetic EHR: authorization error</title></head><body><h1>Authorization error</h1>${rows}</body></html>`;
  },
});

// Token endpoint post-processing: log the request, put SMART context at the top level of the
// token response, say the whole granted scope, remember the tokens issued.
provider.use(async (ctx, next) => {
  if (ctx.path !== '/token' || ctx.method !== 'POST') {
    await next();
    return;
  }
  await next();
  const body = ctx.oidc?.body ?? {};
  let assertionAlg = null;
  let assertionIss = null;
  if (typeof body.client_assertion === 'string') {
    try {
      const [head, payload] = body.client_assertion.split('.');
      assertionAlg = JSON.parse(Buffer.from(head, 'base64url').toString()).alg ?? null;
      assertionIss = JSON.parse(Buffer.from(payload, 'base64url').toString()).iss ?? null;
    } catch {
      assertionAlg = null;
    }
  }
  tokenRequests.push({
    grant_type: body.grant_type ?? null,
    client_id: ctx.oidc?.client?.clientId ?? body.client_id ?? assertionIss,
    has_code_verifier: typeof body.code_verifier === 'string' && body.code_verifier.length > 0,
    client_assertion_alg: assertionAlg,
    status: ctx.status,
  });
  if (ctx.status !== 200 || !ctx.body || typeof ctx.body !== 'object' || !ctx.body.access_token) {
    return;
  }
  const { entities, params } = ctx.oidc;
  const at = entities.AccessToken;
  const grant = entities.Grant;
  const source = entities.AuthorizationCode ?? entities.RefreshToken;
  if (at && grant && source) {
    const requested = params.scope ? splitScope(params.scope) : splitScope(source.scope);
    const resourcePart = new Set(splitScope(at.scope));
    const oidcPart = new Set(splitScope(grant.getOIDCScopeFiltered(new Set(requested))));
    ctx.body.scope = requested.filter((s) => resourcePart.has(s) || oidcPart.has(s)).join(' ');
  }
  const context = grantContexts.get(at?.grantId) ?? {};
  if (context.patient) {
    ctx.body.patient = context.patient;
  }
  ctx.body.need_patient_banner = false;
  issued.access_tokens.push(ctx.body.access_token);
  if (ctx.body.refresh_token) {
    issued.refresh_tokens.push(ctx.body.refresh_token);
  }
});

// The interaction step: no page. Log the user in and grant the requested scopes at once.
async function handleInteraction(req, res, uid) {
  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (error) {
    sendText(res, 400, `interaction failed: ${error.message}`);
    return;
  }
  if (interaction.uid !== uid) {
    sendText(res, 400, 'interaction failed: cookie and URL disagree');
    return;
  }
  const { params } = interaction;
  const requested = splitScope(params.scope);
  let context;
  if (requested.includes('launch') && params.launch && launches.has(params.launch)) {
    context = { ...launches.get(params.launch) };
  } else if (requested.includes('launch/patient')) {
    context = { patient: idOf(config.standalonePatient), user: config.defaultUser };
  } else {
    context = { patient: null, user: config.defaultUser };
  }
  const grant = new provider.Grant({ accountId: context.user, clientId: params.client_id });
  for (const scope of requested) {
    const denied = config.denyScopes.has(scope);
    if (STATIC_SCOPES.includes(scope)) {
      if (denied) grant.rejectOIDCScope(scope); else grant.addOIDCScope(scope);
    } else if (isSmartResourceScope(scope)) {
      if (denied) grant.rejectResourceScope(FHIR_BASE, scope); else grant.addResourceScope(FHIR_BASE, scope);
    }
  }
  const grantId = await grant.save();
  grantContexts.set(grantId, context);
  await provider.interactionFinished(req, res, {
    login: { accountId: context.user },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------------------------------------
// SMART configuration, FHIR proxy

function smartConfiguration() {
  return {
    issuer: ISSUER,
    jwks_uri: provider.urlFor('jwks'),
    authorization_endpoint: provider.urlFor('authorization'),
    token_endpoint: provider.urlFor('token'),
    revocation_endpoint: provider.urlFor('revocation'),
    grant_types_supported: ['authorization_code', 'refresh_token'],
    scopes_supported: [...STATIC_SCOPES, ...ADVERTISED_RESOURCE_SCOPES],
    response_types_supported: ['code'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['private_key_jwt', 'none'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    capabilities: [
      'launch-ehr', 'launch-standalone', 'client-public', 'client-confidential-asymmetric',
      'context-ehr-patient', 'context-standalone-patient', 'permission-v2', 'permission-patient',
      'permission-user', 'sso-openid-connect', 'permission-offline', 'permission-online',
    ],
  };
}

function operationOutcome(code, diagnostics) {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code, diagnostics }],
  };
}

async function bearerTokenValid(req) {
  const header = req.headers.authorization ?? '';
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match) return 'no bearer access token';
  const token = await provider.AccessToken.find(match[1]);
  if (!token) return 'access token unknown or expired';
  if (token.isExpired) return 'access token expired';
  if (token.aud !== undefined && token.aud !== FHIR_BASE) return 'access token not for this FHIR server';
  return null;
}

const HOP_BY_HOP = new Set([
  'host', 'connection', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te', 'trailer',
  'transfer-encoding', 'upgrade', 'content-length', 'authorization', 'accept-encoding', 'cookie',
]);
const FORWARDED_RESPONSE_HEADERS = ['content-type', 'location', 'content-location', 'etag', 'last-modified'];

async function proxyFhir(req, res, rest, search) {
  const target = `${config.fhirUpstream}${rest}${search}`;
  const headers = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (!HOP_BY_HOP.has(name)) headers[name] = value;
  }
  const body = ['GET', 'HEAD'].includes(req.method) ? undefined : await readBody(req);
  let upstream;
  try {
    upstream = await fetch(target, { method: req.method, headers, body, redirect: 'manual' });
  } catch (error) {
    sendJson(res, 502, operationOutcome('transient', `FHIR upstream unreachable: ${error.message}`),
      'application/fhir+json');
    return;
  }
  const outHeaders = {};
  for (const name of FORWARDED_RESPONSE_HEADERS) {
    const value = upstream.headers.get(name);
    if (value !== null) outHeaders[name] = value.split(config.fhirUpstream).join(FHIR_BASE);
  }
  const raw = Buffer.from(await upstream.arrayBuffer());
  const contentType = upstream.headers.get('content-type') ?? '';
  const textual = /json|xml|text|html|javascript/i.test(contentType);
  const payload = textual ? Buffer.from(raw.toString('utf8').split(config.fhirUpstream).join(FHIR_BASE)) : raw;
  outHeaders['content-length'] = String(payload.length);
  res.writeHead(upstream.status, outHeaders);
  res.end(req.method === 'HEAD' ? undefined : payload);
}

function setCors(req, res) {
  const origin = req.headers.origin;
  if (origin) {
    res.setHeader('Access-Control-Allow-Origin', origin);
    res.setHeader('Vary', 'Origin');
    res.setHeader('Access-Control-Allow-Headers', 'Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-None-Exist');
    res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS');
    res.setHeader('Access-Control-Expose-Headers', 'Location, ETag, Content-Location, Last-Modified');
  }
}

async function handleFhir(req, res, url) {
  setCors(req, res);
  if (req.method === 'OPTIONS') {
    res.writeHead(204);
    res.end();
    return;
  }
  const rest = url.pathname.slice('/fhir'.length); // "" or "/..."
  if (rest === '/.well-known/smart-configuration') {
    sendJson(res, 200, smartConfiguration());
    return;
  }
  if (rest === '/metadata' && ['GET', 'HEAD'].includes(req.method)) {
    await proxyFhir(req, res, rest, url.search);
    return;
  }
  const problem = await bearerTokenValid(req);
  if (problem) {
    res.setHeader('WWW-Authenticate', `Bearer realm="${FHIR_BASE}", error="invalid_token", error_description="${problem}"`);
    sendJson(res, 401, operationOutcome('login', problem), 'application/fhir+json');
    return;
  }
  await proxyFhir(req, res, rest, url.search);
}

// ---------------------------------------------------------------------------------------------
// EHR launch page, test hooks

function escapeHtml(value) {
  return String(value)
    .replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;').replaceAll("'", '&#39;');
}

function handleLaunch(res, url) {
  const app = url.searchParams.get('app');
  if (!app || !URL.canParse(app)) {
    sendText(res, 400, 'launch: the "app" parameter must be the absolute URL of the app launch page');
    return;
  }
  const user = url.searchParams.get('user') || config.defaultUser;
  if (!config.users[user]) {
    sendText(res, 400, `launch: unknown user ${user}`);
    return;
  }
  const patient = idOf(url.searchParams.get('patient'));
  const launchId = crypto.randomBytes(16).toString('base64url');
  launches.set(launchId, { patient, user });
  const appUrl = new URL(app);
  appUrl.searchParams.set('iss', FHIR_BASE);
  appUrl.searchParams.set('launch', launchId);
  const patientLine = patient
    ? `<p>Patient: <span id="patient">${escapeHtml(patient)}</span></p>`
    : '<p>No patient selected (user-level launch)</p>';
  const html = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Synthetic EHR</title></head>
<body style="margin:0;font-family:sans-serif">
<h1 style="margin:8px">Synthetic EHR</h1>
<div style="margin:8px">${patientLine}<p>User: <span id="user">${escapeHtml(config.users[user].name ?? user)}</span></p></div>
<iframe id="app" title="Referral follow-up" src="${escapeHtml(appUrl.href)}" style="width:100%;height:90vh"></iframe>
</body>
</html>
`;
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'x-launch-id': launchId,
  });
  res.end(html);
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing

function sendText(res, status, text) {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(text);
}

function sendJson(res, status, value, contentType = 'application/json') {
  const payload = JSON.stringify(value);
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' });
  res.end(payload);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function withoutSessionCookie(cookieHeader) {
  // Each authorization request starts with no oidc-provider session: the user comes from the
  // launch (or default_user), not from an earlier login in the same browser.
  return cookieHeader
    .split(';')
    .map((part) => part.trim())
    .filter((part) => part && !/^_session(\.[a-z]+)?=/.test(part))
    .join('; ');
}

const providerCallback = provider.callback();

async function route(req, res) {
  const url = new URL(req.url, BASE);
  const path = url.pathname;
  if (path === '/health') {
    sendText(res, 200, 'ok');
    return;
  }
  const interaction = /^\/oauth\/interaction\/([A-Za-z0-9_-]+)$/.exec(path);
  if (interaction && req.method === 'GET') {
    await handleInteraction(req, res, interaction[1]);
    return;
  }
  if (path === '/oauth' || path.startsWith('/oauth/')) {
    if (/^\/oauth\/auth(\/[A-Za-z0-9_-]+)?$/.test(path) && req.headers.cookie) {
      req.headers.cookie = withoutSessionCookie(req.headers.cookie);
    }
    if (path === '/oauth/auth' && req.method === 'GET') {
      // OpenID Connect lets offline_access through only with prompt=consent (oidc-provider drops
      // it otherwise); SMART apps ask for offline_access without a prompt. Consent is given in
      // the interaction step anyway, so say prompt=consent on the app's behalf.
      const scopes = splitScope(url.searchParams.get('scope'));
      if (scopes.includes('offline_access') && !url.searchParams.has('prompt')) {
        url.searchParams.set('prompt', 'consent');
        req.url = `${url.pathname}${url.search}`;
      }
    }
    req.originalUrl = req.url;
    req.url = req.url.slice('/oauth'.length) || '/';
    providerCallback(req, res);
    return;
  }
  if (path === '/fhir' || path.startsWith('/fhir/')) {
    await handleFhir(req, res, url);
    return;
  }
  if (path === '/ehr/launch' && req.method === 'GET') {
    handleLaunch(res, url);
    return;
  }
  if (path === '/test/issued' && req.method === 'GET') {
    sendJson(res, 200, issued);
    return;
  }
  if (path === '/test/token-requests' && req.method === 'GET') {
    sendJson(res, 200, tokenRequests);
    return;
  }
  sendJson(res, 404, operationOutcome('not-found', `no route for ${req.method} ${path}`));
}

const server = http.createServer((req, res) => {
  const started = Date.now();
  res.on('finish', () => {
    const path = (req.originalUrl ?? req.url).split('?')[0];
    console.log(`${new Date().toISOString()} ${req.method} ${path} -> ${res.statusCode} (${Date.now() - started} ms)`);
  });
  route(req, res).catch((error) => {
    console.error(error);
    if (!res.headersSent) {
      sendJson(res, 500, operationOutcome('exception', String(error?.message ?? error)));
    } else {
      res.destroy();
    }
  });
});

provider.on('server_error', (ctx, error) => console.error('oidc-provider server_error', error));

server.listen(config.port, HOST, () => {
  console.log(`smart-ehr listening on ${BASE} (issuer ${ISSUER}, FHIR ${FHIR_BASE} -> ${config.fhirUpstream})`);
});

function shutdown(signal) {
  console.log(`smart-ehr: ${signal}, stopping`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
