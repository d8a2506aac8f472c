import { createHmac, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** What the two halves of the loopback cache service (Twirp and Azure) share: entries, counters, signing. */

export type GhaServerMethod =
  | 'CreateCacheEntry'
  | 'FinalizeCacheEntryUpload'
  | 'GetCacheEntryDownloadURL'
  | 'PutBlob'
  | 'PutBlock'
  | 'PutBlockList'
  | 'GetBlob';

const METHODS: readonly GhaServerMethod[] = [
  'CreateCacheEntry',
  'FinalizeCacheEntryUpload',
  'GetCacheEntryDownloadURL',
  'PutBlob',
  'PutBlock',
  'PutBlockList',
  'GetBlob',
];

export interface GhaServerCounters {
  requests: Record<GhaServerMethod, number>;
  /** Requests refused for a missing or wrong bearer token or signature. */
  unauthorized: number;
  faults: number;
  /** Blob bytes accepted by Put Blob and Put Block. */
  bytesUploaded: number;
  /** Blob bytes written to Get Blob responses (including those of broken responses). */
  bytesDownloaded: number;
}

export interface Entry {
  id: number;
  key: string;
  version: string;
  /** Creation order: "most recently created" is the highest. */
  seq: number;
  finalized: boolean;
  committed: Buffer | undefined;
  committedBlocks: Map<string, Buffer>;
  uncommitted: Map<string, Buffer>;
  blockIdLength: number | undefined;
  blocks: number;
}

function zero(): GhaServerCounters {
  const requests = Object.fromEntries(METHODS.map((m) => [m, 0])) as Record<GhaServerMethod, number>;
  return { requests, unauthorized: 0, faults: 0, bytesUploaded: 0, bytesDownloaded: 0 };
}

export function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n <= limit) chunks.push(c);
    });
    req.on('end', () => resolve(n <= limit ? Buffer.concat(chunks) : undefined));
    req.on('error', () => resolve(undefined));
    req.on('close', () => resolve(undefined));
  });
}

export class GhaServerState {
  counters: GhaServerCounters = zero();
  readonly byId = new Map<number, Entry>();
  /** Every signed URL handed out so far, in order. */
  readonly signedUrls: string[] = [];
  /** `http://127.0.0.1:PORT`, known once the server listens. */
  origin = '';
  private signingKey = randomBytes(32);
  private nextId = 1;
  private seq = 0;

  constructor(readonly token: string) {}

  partition(version: string, key: string): Entry | undefined {
    for (const e of this.byId.values()) if (e.version === version && e.key === key) return e;
    return undefined;
  }

  /** Reserves a new, empty entry. */
  create(key: string, version: string): Entry {
    const entry: Entry = {
      id: this.nextId++,
      key,
      version,
      seq: ++this.seq,
      finalized: false,
      committed: undefined,
      committedBlocks: new Map(),
      uncommitted: new Map(),
      blockIdLength: undefined,
      blocks: 0,
    };
    this.byId.set(entry.id, entry);
    return entry;
  }

  sign(perm: string, id: number, expiry: string): string {
    return createHmac('sha256', this.signingKey).update(`${perm}\n${id}\n${expiry}`).digest('base64');
  }

  signedUrl(id: number, perm: 'cw' | 'r'): string {
    const se = new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d+Z$/, 'Z');
    const q = new URLSearchParams({ sv: '2023-11-03', sr: 'b', sp: perm, se, sig: this.sign(perm, id, se) });
    const url = `${this.origin}/blob/${id}?${q.toString()}`;
    this.signedUrls.push(url);
    return url;
  }

  /** Invalidates every signed URL handed out so far, as their expiry would. */
  rotateSigningKey(): void {
    this.signingKey = randomBytes(32);
  }

  resetCounters(): void {
    this.counters = zero();
  }
}
