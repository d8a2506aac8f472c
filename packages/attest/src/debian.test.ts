import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { isSpdxExpression } from './license.ts';
import { scanRootfs } from './scan.ts';
import { spdxDocument } from './spdx.ts';
import { removeDir, tempDir } from './testing.ts';

const TAR = '/var/cache/tsbuild-test/debian-bookworm.tar';

function missing(): string | undefined {
  if (!existsSync(TAR)) return `${TAR} is not on this machine`;
  if (process.getuid?.() !== 0) return 'unpacking an image filesystem needs root';
  try {
    execFileSync('dpkg-query', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'dpkg-query is not installed';
  }
  return undefined;
}

test('the real Debian bookworm image: every package dpkg-query lists as installed is in the SBOM, same version', async (t) => {
  const reason = missing();
  if (reason !== undefined) {
    t.skip(reason);
    return;
  }
  const root = tempDir('bookworm');
  try {
    execFileSync('tar', ['-x', '-f', TAR, '-C', root]);
    const listed = execFileSync('dpkg-query', [`--admindir=${root}/var/lib/dpkg`, '-W', '-f', '${db:Status-Status} ${Package} ${Version}\\n'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.startsWith('installed '))
      .map((l) => l.split(' ').slice(1) as [string, string]);
    assert.ok(listed.length > 50, `dpkg-query lists ${listed.length} packages`);

    const r = await scanRootfs(root);
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(r.os, { id: 'debian', versionId: '12', codename: 'bookworm' });
    const deb = r.packages.filter((p) => p.ecosystem === 'deb');
    const versions = new Map(deb.map((p) => [p.name, p.version]));
    for (const [name, version] of listed) assert.equal(versions.get(name), version, name);
    assert.equal(deb.length, listed.length, 'nothing dpkg does not list as installed');
    for (const p of deb) assert.match(p.purl, /^pkg:deb\/debian\/[^@]+@[^?]+\?arch=(amd64|arm64|all|[a-z0-9-]+)&distro=debian-12$/);
    const doc = spdxDocument(r.packages, { name: 'debian:bookworm', namespaceSeed: 'debian', created: new Date(0), tsbuildVersion: 'test' });
    assert.equal(doc.packages.length, r.packages.length + 1);
    assert.ok(doc.packages.some((p) => p.name === 'dpkg' && p.licenseDeclared.includes('GPL-2.0')), 'a DEP-5 license read from the image');
    const defined = new Set((doc.hasExtractedLicensingInfos ?? []).map((l) => l.licenseId));
    for (const p of doc.packages) {
      assert.ok(p.licenseDeclared === 'NOASSERTION' || isSpdxExpression(p.licenseDeclared), `${p.name}: ${p.licenseDeclared}`);
      for (const ref of p.licenseDeclared.match(/LicenseRef-[A-Za-z0-9.-]+/g) ?? []) assert.ok(defined.has(ref), `${p.name}: ${ref} is defined`);
    }
    t.diagnostic(`dpkg-query lists ${listed.length} installed packages; the SBOM has ${deb.length} deb packages (${r.packages.length} in all)`);
  } finally {
    removeDir(root);
  }
});
