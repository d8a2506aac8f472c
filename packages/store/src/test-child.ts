/**
 * A separate tsbuild process for the store's multi-process tests: the lock and crash-safety
 * guarantees only mean something across processes. Usage: test-child.ts <mode> <root> [args...]
 */
import { parseDigest, MediaType } from '@tsbuild/oci';
import { openStore } from './index.ts';
import { withLock } from './lock.ts';
import { join } from 'node:path';

const [mode, root, ...args] = process.argv.slice(2);
if (!mode || !root) throw new Error('usage: test-child.ts <mode> <root> [args...]');
const store = await openStore({ root });

switch (mode) {
  case 'tag': {
    // tag <prefix> <count> <manifest digest> <size>
    const [prefix, count, digest, size] = args;
    const desc = { mediaType: MediaType.OciManifest, digest: parseDigest(digest!), size: Number(size) };
    for (let i = 0; i < Number(count); i++) await store.tag(`${prefix}:${i}`, desc);
    break;
  }
  case 'tag-forever': {
    const [digest, size] = args;
    const desc = { mediaType: MediaType.OciManifest, digest: parseDigest(digest!), size: Number(size) };
    for (let i = 0; ; i++) {
      await store.tag(`crash:${i}`, desc);
      if (i === 0) process.stdout.write('ready\n');
    }
  }
  case 'hold-lock': {
    await withLock(join(store.locksDir, 'index.lock'), async () => {
      process.stdout.write('ready\n');
      await new Promise(() => setInterval(() => undefined, 1000));
    });
    break;
  }
  case 'big-blob': {
    const w = store.blobWriter();
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    for (let i = 0; ; i++) {
      if (!w.stream.write(chunk)) await new Promise((r) => w.stream.once('drain', r));
      if (i === 8) process.stdout.write('ready\n');
    }
  }
  case 'many-blobs': {
    for (let i = 0; ; i++) {
      await store.writeBlob(Buffer.alloc(64 << 10, i % 251).fill(`${process.pid}-${i}`, 0, 20));
      if (i === 3) process.stdout.write('ready\n');
    }
  }
  default:
    throw new Error(`unknown mode ${mode}`);
}
