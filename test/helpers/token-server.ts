import { execFileSync } from 'node:child_process';
import { createPrivateKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenOnLoopback } from './loopback.ts';

/**
 * A Docker token server for tests: checks Basic credentials (or an OAuth2 refresh token) and
 * issues RS256 JWTs that a registry configured with `certFile` as its rootcertbundle accepts.
 */
export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  certFile: string;
  /** Every token request, in order (scopes asked, how the caller authenticated). */
  requests: Array<{ scopes: string[]; via: 'basic' | 'refresh' | 'anonymous' }>;
  stop(): Promise<void>;
}

export interface TokenServerOptions {
  users: Record<string, string>;
  refreshToken?: string;
  /** Answer with `access_token` instead of `token`. */
  accessTokenField?: boolean;
  expiresIn?: number;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

function makeJwt(key: KeyObject, certDerB64: string, claims: Record<string, unknown>): string {
  const header = { typ: 'JWT', alg: 'RS256', x5c: [certDerB64] };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(sign('RSA-SHA256', Buffer.from(input), key))}`;
}

function parseScope(scope: string): { type: string; name: string; actions: string[] } | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last === first) return undefined;
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions: scope.slice(last + 1).split(',') };
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const dir = await mkdtemp(join(tmpdir(), 'tsbuild-token-'));
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=tsbuild test token issuer'], { stdio: 'ignore' });
  const key = createPrivateKey(await readFile(keyFile));
  const certDer = (await readFile(certFile, 'utf8')).replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '');
  const service = 'tsbuild-test-registry';
  const issuer = 'tsbuild-test-issuer';
  const requests: TokenServer['requests'] = [];

  const issue = (res: ServerResponse, account: string, scopes: string[]): void => {
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = opts.expiresIn ?? 300;
    const access = scopes.map(parseScope).filter((s) => s !== undefined);
    const token = makeJwt(key, certDer, { iss: issuer, sub: account, aud: service, exp: now + expiresIn, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(opts.accessTokenField ? { access_token: token, expires_in: expiresIn } : { token, expires_in: expiresIn, issued_at: new Date(now * 1000).toISOString() }));
  };
  const deny = (res: ServerResponse): void => {
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="token"' });
    res.end('{"details":"incorrect username or password"}');
  };

  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname !== '/token') {
        res.writeHead(404).end();
        return;
      }
      if (req.method === 'POST') {
        const form = new URLSearchParams(await body(req));
        const scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
        if (form.get('grant_type') !== 'refresh_token' || !opts.refreshToken || form.get('refresh_token') !== opts.refreshToken) {
          deny(res);
          return;
        }
        requests.push({ scopes, via: 'refresh' });
        issue(res, 'refresh-user', scopes);
        return;
      }
      const scopes = url.searchParams.getAll('scope');
      const authz = req.headers.authorization ?? '';
      if (!authz.startsWith('Basic ')) {
        requests.push({ scopes, via: 'anonymous' });
        deny(res);
        return;
      }
      const decoded = Buffer.from(authz.slice(6), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      const user = decoded.slice(0, colon);
      const password = decoded.slice(colon + 1);
      if (colon < 0 || opts.users[user] === undefined || opts.users[user] !== password) {
        deny(res);
        return;
      }
      requests.push({ scopes, via: 'basic' });
      issue(res, user, scopes);
    })().catch(() => res.destroy());
  });
  const listening = await listenOnLoopback(server);
  return {
    realm: `${listening.origin}/token`,
    service,
    issuer,
    certFile,
    requests,
    stop: async () => {
      await listening.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
