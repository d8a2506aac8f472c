import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { diff } from './diff.ts';
import { apply } from './apply.ts';
import { snapshotTree, tempDir } from './testing.ts';

const sh = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** A minimal OCI image layout holding `layers` (uncompressed tars named by their digest). */
function writeLayout(dir: string, layers: Array<{ diffId: string; size: number }>): void {
  const put = (o: unknown): { digest: string; size: number } => {
    const b = Buffer.from(JSON.stringify(o));
    const hex = createHash('sha256').update(b).digest('hex');
    writeFileSync(`${dir}/blobs/sha256/${hex}`, b);
    return { digest: `sha256:${hex}`, size: b.length };
  };
  const config = put({
    architecture: 'amd64',
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map(() => ({ created_by: 'layer test' })),
  });
  const manifest = put({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: l.diffId, size: l.size })),
  });
  writeFileSync(`${dir}/oci-layout`, '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    `${dir}/index.json`,
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
    }),
  );
}

test('umoci unpacks our layers (PAX names, xattrs, whiteouts, opaque dirs) to the same tree apply builds', async () => {
  const base = tempDir('umoci');
  try {
    const lower = `${base}/lower`;
    mkdirSync(`${lower}/etc/conf.d`, { recursive: true });
    writeFileSync(`${lower}/etc/hello`, 'hi');
    writeFileSync(`${lower}/etc/gone`, 'deleted by the upper layer');
    writeFileSync(`${lower}/etc/conf.d/old`, 'hidden by the opaque dir');
    mkdirSync(`${lower}/${'x'.repeat(150)}`);
    writeFileSync(`${lower}/${'x'.repeat(150)}/${'y'.repeat(150)}`, 'long');
    symlinkSync('/etc/hello', `${lower}/link`);
    sh('setfattr', '-n', 'user.bin', '-v', '0x00ff0a', `${lower}/etc/hello`);

    // What an overlay upper dir looks like after `rm /etc/gone` and `rm -r /etc/conf.d && mkdir /etc/conf.d`.
    const upper = `${base}/upper`;
    mkdirSync(`${upper}/etc/conf.d`, { recursive: true });
    sh('mknod', `${upper}/etc/gone`, 'c', '0', '0');
    sh('setfattr', '-n', 'trusted.overlay.opaque', '-v', 'y', `${upper}/etc/conf.d`);
    writeFileSync(`${upper}/etc/conf.d/new`, 'n');

    const layout = `${base}/layout`;
    mkdirSync(`${layout}/blobs/sha256`, { recursive: true });
    const layers = [];
    for (const src of [lower, upper]) {
      const r = await diff(src, createWriteStream(`${base}/l.tar`), { sourceDateEpoch: 1_700_000_000 });
      renameSync(`${base}/l.tar`, `${layout}/blobs/sha256/${r.diffId.slice('sha256:'.length)}`);
      layers.push(r);
    }
    writeLayout(layout, layers);

    sh('umoci', 'unpack', '--image', `${layout}:latest`, `${base}/bundle`);
    const rootfs = `${base}/bundle/rootfs`;
    assert.ok(!existsSync(`${rootfs}/etc/gone`));
    assert.ok(!existsSync(`${rootfs}/etc/conf.d/old`));
    assert.equal(readFileSync(`${rootfs}/etc/conf.d/new`, 'utf8'), 'n');
    assert.equal(readFileSync(`${rootfs}/${'x'.repeat(150)}/${'y'.repeat(150)}`, 'utf8'), 'long');

    for (const l of layers) {
      await apply(createReadStream(`${layout}/blobs/sha256/${l.diffId.slice('sha256:'.length)}`), `${base}/ours`);
    }
    const theirs = await snapshotTree(rootfs);
    const ours = await snapshotTree(`${base}/ours`);
    assert.deepEqual(ours, theirs);
    assert.equal(ours['etc/hello']!.xattrs?.['user.bin'], '00ff0a');
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
