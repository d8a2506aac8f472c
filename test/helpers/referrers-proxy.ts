import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';

/**
 * A registry with the OCI 1.1 referrers API, made from docker-registry 2.8 (which has none) and a
 * loopback proxy in front of it: a manifest PUT that names a `subject` is answered with the
 * `OCI-Subject` header and remembered, and `GET /v2/<name>/referrers/<digest>` lists what was
 * pushed for that subject, as distribution-spec 1.1 describes. Everything else passes through.
 */
export interface ReferrersRegistry {
  host: string;
  /** Referrers API calls answered. */
  readonly lookups: number;
  stop(): Promise<void>;
}

interface Referrer {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export async function startReferrersProxy(upstream: string): Promise<ReferrersRegistry> {
  const [upHost, upPort] = upstream.split(':');
  const byRepoSubject = new Map<string, Referrer[]>();
  let lookups = 0;
  const forward = (req: IncomingMessage, res: ServerResponse, body: Buffer | undefined, extra: Record<string, string> = {}): void => {
    const up = request({ host: upHost, port: Number(upPort), method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, { ...upRes.headers, ...(upRes.statusCode === 201 ? extra : {}) });
      upRes.pipe(res);
    });
    up.on('error', () => req.socket.destroy());
    if (body) up.end(body);
    else req.pipe(up);
  };
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const refs = /^\/v2\/(.+)\/referrers\/(sha256:[0-9a-f]{64})$/.exec(url.pathname);
    if (refs && req.method === 'GET') {
      lookups++;
      const list = byRepoSubject.get(`${refs[1]}@${refs[2]}`) ?? [];
      const want = url.searchParams.get('artifactType');
      const manifests = want ? list.filter((r) => r.artifactType === want) : list;
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', ...(want ? { 'oci-filters-applied': 'artifactType' } : {}) });
      res.end(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
      return;
    }
    const man = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname);
    if (man && req.method === 'PUT') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        let extra: Record<string, string> = {};
        try {
          const m = JSON.parse(body.toString('utf8')) as { mediaType?: string; artifactType?: string; config?: { mediaType?: string }; subject?: { digest?: string }; annotations?: Record<string, string> };
          const subject = m.subject?.digest;
          if (typeof subject === 'string') {
            const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
            const key = `${man[1]}@${subject}`;
            const list = (byRepoSubject.get(key) ?? []).filter((r) => r.digest !== digest);
            const entry: Referrer = { mediaType: m.mediaType ?? 'application/vnd.oci.image.manifest.v1+json', digest, size: body.length };
            const artifactType = m.artifactType ?? m.config?.mediaType;
            if (artifactType) entry.artifactType = artifactType;
            if (m.annotations) entry.annotations = m.annotations;
            byRepoSubject.set(key, [...list, entry]);
            extra = { 'OCI-Subject': subject };
          }
        } catch {
          // not JSON: the registry will say so
        }
        forward(req, res, body, extra);
      });
      return;
    }
    forward(req, res, undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  return {
    host: `127.0.0.1:${port}`,
    get lookups() {
      return lookups;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
