import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { openRoot, importImage } from '../packages/builder/src/index.ts';
import { apply, diff } from '../packages/layer/src/index.ts';
import { buildManifest, chainIds, MediaType } from '../packages/oci/src/index.ts';
import type { Digest } from '../packages/oci/src/index.ts';
import { run } from '../packages/executor/src/index.ts';
import { busyboxTar } from './helpers/base.ts';

/** Every path in a rootfs with its type, mode, owner and content hash, for exact comparisons. */
function walk(root: string, rel = ''): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of readdirSync(join(root, rel)).sort()) {
    const p = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(root, p));
    const kind = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 'f';
    const extra = st.isFile() ? readFileSync(join(root, p)).toString('base64').slice(0, 40) + st.size : '';
    out.set(p, `${kind} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${extra}`);
    if (st.isDirectory()) for (const [k, v] of walk(root, p)) out.set(k, v);
  }
  return out;
}

test('prepare over busybox, run, commit, diff: the changeset tar and the image umoci unpacks', async () => {
  const work = mkdtempSync(join(tmpdir(), 'tsbuild-substrate-'));
  try {
    const env = await openRoot(join(work, 'root'));
    const { store, snapshots } = env;
    const base = await importImage(store, busyboxTar(), { tags: ['busybox:latest'] });
    const img = await store.loadImage('busybox:latest');
    const config = await img.config();
    const baseLayer = (await img.manifest()).layers[0]!;
    const baseChain = chainIds(config.rootfs.diff_ids)[0]!;
    await snapshots.unpack(baseChain, undefined, async (dir) => {
      await apply(await store.openBlob(baseLayer.digest), dir);
    });

    const active = await snapshots.prepare(baseChain);
    let diffId: Digest;
    try {
      const r = await run({
        rootfs: active.rootfs,
        args: ['sh', '-c', 'echo x > /a; rm /bin/ls; mkdir -p /d && touch /d/f; rm -rf /etc && mkdir /etc && echo y > /etc/z'],
        stateDir: join(work, 'state'),
        etcFiles: false,
      });
      assert.equal(r.exitCode, 0);
      const tarFile = join(work, 'layer.tar');
      const out = createWriteStream(tarFile);
      const d = await diff(active.upper, out);
      await finished(out);
      diffId = d.diffId;
      const names = execFileSync('tar', ['-tf', tarFile], { encoding: 'utf8' }).trim().split('\n');
      assert.deepEqual(names, ['a', 'bin/', 'bin/.wh.ls', 'd/', 'd/f', 'etc/', 'etc/.wh..wh..opq', 'etc/z']);
      await store.writeBlob(createReadStream(tarFile), { digest: d.diffId, size: d.size });
      await active.commit(chainIds([...config.rootfs.diff_ids, d.diffId]).at(-1)!);
    } catch (e) {
      await active.release().catch(() => {});
      throw e;
    }

    // The base image with that layer appended, unpacked by umoci, has exactly those changes.
    const layers = [...(await img.manifest()).layers, { mediaType: MediaType.OciLayer, digest: diffId, size: lstatSync(store.blobPath(diffId)).size }];
    const cfg = structuredClone(config);
    cfg.rootfs.diff_ids.push(diffId);
    cfg.history = [...(cfg.history ?? []), { created_by: 'RUN the substrate test' }];
    const cdesc = await store.putJson(MediaType.OciConfig, cfg);
    const mdesc = await store.putJson(MediaType.OciManifest, buildManifest(cdesc, layers));
    await store.tag('changed:latest', mdesc);
    execFileSync('umoci', ['unpack', '--image', `${env.root}/oci:busybox:latest`, join(work, 'before')]);
    execFileSync('umoci', ['unpack', '--image', `${env.root}/oci:changed:latest`, join(work, 'after')]);
    const before = walk(join(work, 'before/rootfs'));
    const after = walk(join(work, 'after/rootfs'));
    const added = [...after.keys()].filter((k) => !before.has(k)).sort();
    const removed = [...before.keys()].filter((k) => !after.has(k)).sort();
    const changed = [...after.keys()].filter((k) => before.has(k) && before.get(k) !== after.get(k) && !lstatSync(join(work, 'after/rootfs', k)).isDirectory());
    assert.deepEqual(added, ['a', 'd', 'd/f', 'etc/z']);
    assert.deepEqual(removed, ['bin/ls', 'etc/group', 'etc/passwd']);
    assert.deepEqual(changed, []);
    assert.ok(base.digest.startsWith('sha256:'));
  } finally {
    execFileSync('sh', ['-c', `grep -o ' ${work}[^ ]*' /proc/self/mountinfo | xargs -r -n1 umount -l || true`]);
    rmSync(work, { recursive: true, force: true });
  }
  assert.ok(!existsSync(work));
});
