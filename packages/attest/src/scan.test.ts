import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { serializeStatement } from './intoto.ts';
import { isSpdxExpression } from './license.ts';
import { scanRootfs } from './scan.ts';
import { sbomStatement, spdxDocument } from './spdx.ts';
import { link, removeDir, tempDir, writeTree } from './testing.ts';
import { sha256 } from '@tsbuild/oci';

const DEP5 = `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: glibc
Source: https://www.gnu.org/software/libc/

Files: *
Copyright: 1991-2023 Free Software Foundation, Inc.
License: LGPL-2.1+

Files: debian/*
Copyright: 2000 Somebody
License: GPL-2+ or Artistic-2.0, and BSD-3-clause

License: LGPL-2.1+
 This library is free software; you can redistribute it and/or
 modify it under the terms of the GNU Lesser General Public
 .
 On Debian systems, the complete text is in /usr/share/common-licenses.
`;

const STATUS = `Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.
 .
 More text.

Package: tzdata
Status: hold ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: halfpkg
Status: install reinstreq half-installed
Architecture: amd64
Version: 2.0-1

Package: libstdc++6
Status: install ok installed
Architecture: amd64
Version: 12.2.0-14
`;

function debianTree(root: string): void {
  writeTree(root, {
    'usr/lib/os-release': 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n',
    'var/lib/dpkg/status': STATUS,
    'var/lib/dpkg/status.d/netbase': 'Package: netbase\nVersion: 6.4\nArchitecture: all\nMaintainer: Debian\n',
    'var/lib/dpkg/status.d/netbase.md5sums': 'd41d8cd98f00b204e9800998ecf8427e  etc/protocols\n',
    'usr/share/doc/libc6/copyright': DEP5,
    'usr/share/doc/tzdata/copyright': 'This is the Debian prepackaged version of the Time Zone database.\nIt is in the public domain.\n',
    'usr/share/doc/gcc-12-base/copyright': 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: FSF\nLicense: GPL-3+\n',
    'app/package-lock.json': {
      name: 'app',
      version: '1.0.0',
      lockfileVersion: 3,
      requires: true,
      packages: {
        '': { name: 'app', version: '1.0.0', dependencies: { express: '^4.18.2' } },
        'node_modules/express': { version: '4.18.2', resolved: 'https://registry.npmjs.org/express/-/express-4.18.2.tgz', license: 'MIT' },
        'node_modules/@types/node': { version: '20.1.0', dev: true, license: 'MIT' },
        'node_modules/@babel/core': { version: '7.23.0', license: 'MIT' },
        'node_modules/express/node_modules/debug': { version: '2.6.9', license: 'MIT' },
        'node_modules/aliased': { name: 'real-pkg', version: '2.0.0', license: 'ISC' },
        'node_modules/local-lib': { resolved: 'packages/local-lib', link: true },
        'packages/local-lib': { name: 'local-lib', version: '0.0.1' },
      },
    },
    'app/node_modules/express/package.json': { name: 'express', version: '4.18.2', license: 'MIT' },
    'app/node_modules/@babel/core/package.json': { name: '@babel/core', version: '7.23.0', license: 'MIT' },
    'app/node_modules/@babel/core/lib/package.json': { type: 'module' },
    'app/node_modules/express/node_modules/debug/package.json': { name: 'debug', version: '2.6.9', license: { type: 'MIT' } },
    'app/node_modules/left-pad/package.json': { name: 'left-pad', version: '1.3.0', license: 'WTFPL' },
    'app/node_modules/.bin/placeholder': '',
    'usr/lib/node_modules/npm/package.json': { name: 'npm', version: '10.2.4', license: 'Artistic-2.0' },
    'legacy/package-lock.json': {
      name: 'legacy',
      lockfileVersion: 1,
      dependencies: {
        lodash: { version: '4.17.21' },
        mocha: { version: '10.0.0', dev: true },
        request: { version: '2.88.2', dependencies: { qs: { version: '6.5.3' } } },
        gitdep: { version: 'github:user/repo#abc' },
        alias: { version: 'npm:@scope/real@1.0.0' },
      },
    },
    'v2app/package-lock.json': {
      name: 'v2app',
      lockfileVersion: 2,
      packages: { '': { name: 'v2app' }, 'node_modules/ms': { version: '2.1.3', license: 'MIT' } },
      // lockfileVersion 2 repeats the tree in v1 form for old npms; `packages` is what counts.
      dependencies: { ms: { version: '2.1.3' }, 'only-in-v1-section': { version: '9.9.9' } },
    },
    'usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA': 'Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\nClassifier: License :: OSI Approved :: MIT License\n\nSix is a Python 2 and 3 compatibility library.\nLicense: not a header\n',
    'usr/local/lib/python3.11/site-packages/Zope.Interface-6.0.dist-info/METADATA': 'Metadata-Version: 2.4\nName: Zope.Interface\nVersion: 6.0\nLicense-Expression: ZPL-2.1\n',
    'opt/venv/lib/python3.11/site-packages/requests-2.31.0.dist-info/METADATA': 'Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nLicense: Apache 2.0\n',
    'src/foo-1.0.dist-info/METADATA': 'Name: foo\nVersion: 1.0\n',
  });
  link(root, 'etc/os-release', '../usr/lib/os-release');
  link(root, 'usr/share/doc/libstdc++6', 'gcc-12-base');
}

const DEBIAN_PURLS = [
  'pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12',
  'pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian-12',
  'pkg:deb/debian/netbase@6.4?arch=all&distro=debian-12',
  'pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12',
  'pkg:npm/%40babel/core@7.23.0',
  'pkg:npm/%40scope/real@1.0.0',
  'pkg:npm/debug@2.6.9',
  'pkg:npm/express@4.18.2',
  'pkg:npm/left-pad@1.3.0',
  'pkg:npm/lodash@4.17.21',
  'pkg:npm/ms@2.1.3',
  'pkg:npm/npm@10.2.4',
  'pkg:npm/qs@6.5.3',
  'pkg:npm/real-pkg@2.0.0',
  'pkg:npm/request@2.88.2',
  'pkg:pypi/requests@2.31.0',
  'pkg:pypi/six@1.16.0',
  'pkg:pypi/zope-interface@6.0',
];

test('a Debian-like tree: dpkg status and status.d, DEP-5 licenses, npm lockfiles and node_modules, dist-info', async () => {
  const root = tempDir('deb');
  try {
    debianTree(root);
    const r = await scanRootfs(root);
    assert.deepEqual(r.os, { id: 'debian', versionId: '12', codename: 'bookworm' });
    assert.deepEqual(
      r.packages.map((p) => p.purl),
      DEBIAN_PURLS,
    );
    const by = new Map(r.packages.map((p) => [p.purl, p]));
    const libc = by.get(DEBIAN_PURLS[0]!)!;
    assert.equal(libc.name, 'libc6');
    assert.equal(libc.version, '2.36-9+deb12u4');
    assert.deepEqual(libc.license, { expression: '((GPL-2.0-or-later OR Artistic-2.0) AND BSD-3-Clause) AND LGPL-2.1-or-later', refs: {} });
    assert.deepEqual(libc.locations, ['/var/lib/dpkg/status']);
    assert.equal(by.get(DEBIAN_PURLS[1]!)!.license?.expression, 'GPL-3.0-or-later', 'the copyright of a symlinked doc dir');
    assert.equal(by.get(DEBIAN_PURLS[3]!)!.license, undefined, 'a copyright file that is not DEP-5');
    assert.deepEqual(by.get(DEBIAN_PURLS[2]!)!.locations, ['/var/lib/dpkg/status.d/netbase']);
    assert.deepEqual(by.get('pkg:npm/express@4.18.2')!.locations, ['/app/node_modules/express/package.json', '/app/package-lock.json']);
    assert.equal(by.get('pkg:npm/debug@2.6.9')!.license?.expression, 'MIT');
    assert.equal(by.get('pkg:npm/left-pad@1.3.0')!.license?.expression, 'WTFPL');
    assert.equal(by.get('pkg:npm/lodash@4.17.21')!.license, undefined);
    assert.deepEqual(by.get('pkg:npm/ms@2.1.3')!.license, { expression: 'MIT', refs: {} });
    assert.equal(by.get('pkg:pypi/zope-interface@6.0')!.name, 'Zope.Interface');
    assert.equal(by.get('pkg:pypi/zope-interface@6.0')!.license?.expression, 'ZPL-2.1');
    assert.equal(by.get('pkg:pypi/six@1.16.0')!.license?.expression, 'MIT');
    const requests = by.get('pkg:pypi/requests@2.31.0')!.license!;
    assert.match(requests.expression, /^LicenseRef-Apache-2.0-[0-9a-f]{8}$/);
    assert.deepEqual(requests.refs, { [requests.expression]: 'Apache 2.0' });
    assert.deepEqual(r.warnings, ['/legacy/package-lock.json: 1 entries without a registry name and version skipped']);

    const doc = spdxDocument(r.packages, { name: 'registry.example/app:1.0', namespaceSeed: sha256('manifest'), created: new Date(1700000000 * 1000), tsbuildVersion: '1.2.3' });
    assert.equal(doc.spdxVersion, 'SPDX-2.3');
    assert.equal(doc.dataLicense, 'CC0-1.0');
    assert.equal(doc.SPDXID, 'SPDXRef-DOCUMENT');
    assert.equal(doc.creationInfo.created, '2023-11-14T22:13:20Z');
    assert.deepEqual(doc.creationInfo.creators, ['Tool: tsbuild-1.2.3']);
    assert.match(doc.documentNamespace, /^https:\/\/spdx\.org\/spdxdocs\/tsbuild\/registry.example-app-1.0-[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(doc.packages.length, DEBIAN_PURLS.length + 1);
    const ids = new Set(doc.packages.map((p) => p.SPDXID));
    assert.equal(ids.size, doc.packages.length, 'SPDXIDs are unique');
    for (const id of ids) assert.match(id, /^SPDXRef-[A-Za-z0-9.-]+$/);
    assert.deepEqual(doc.relationships[0], { spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: 'SPDXRef-Image' });
    assert.equal(doc.relationships.length, DEBIAN_PURLS.length + 1);
    for (const rel of doc.relationships.slice(1)) {
      assert.equal(rel.spdxElementId, 'SPDXRef-Image');
      assert.equal(rel.relationshipType, 'CONTAINS');
      assert.ok(ids.has(rel.relatedSpdxElement));
    }
    const defined = new Set((doc.hasExtractedLicensingInfos ?? []).map((l) => l.licenseId));
    for (const p of doc.packages) {
      assert.equal(p.downloadLocation, 'NOASSERTION');
      assert.equal(p.licenseConcluded, 'NOASSERTION');
      assert.ok(p.licenseDeclared === 'NOASSERTION' || isSpdxExpression(p.licenseDeclared), p.licenseDeclared);
      for (const ref of p.licenseDeclared.match(/LicenseRef-[A-Za-z0-9.-]+/g) ?? []) assert.ok(defined.has(ref), `${ref} is defined`);
    }
    const libcPkg = doc.packages.find((p) => p.name === 'libc6')!;
    assert.deepEqual(libcPkg.externalRefs, [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: DEBIAN_PURLS[0] }]);
    assert.equal(libcPkg.versionInfo, '2.36-9+deb12u4');
    assert.equal(doc.packages.find((p) => p.name === 'tzdata')!.licenseDeclared, 'NOASSERTION');
    assert.deepEqual(doc.hasExtractedLicensingInfos, [{ licenseId: requests.expression, extractedText: 'Apache 2.0', name: 'Apache 2.0' }]);

    const st = sbomStatement(doc, { digest: sha256('manifest'), names: ['registry.example/app:1.0'] });
    assert.equal(st._type, 'https://in-toto.io/Statement/v1');
    assert.equal(st.predicateType, 'https://spdx.dev/Document');
    assert.deepEqual(st.subject, [{ name: 'registry.example/app:1.0', digest: { sha256: sha256('manifest').slice(7) } }]);
  } finally {
    removeDir(root);
  }
});

test('an Alpine-like tree: apk installed database, read once when /lib is merged into /usr/lib', async () => {
  const root = tempDir('apk');
  try {
    writeTree(root, {
      'etc/os-release': 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.3\n',
      'usr/lib/apk/db/installed': [
        'C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\nS:400000\nI:600000\nT:the musl c library\nL:MIT\no:musl\nF:lib\nR:ld-musl-x86_64.so.1\nZ:Q1xyz=\n',
        'P:busybox\nV:1.36.1-r29\nA:x86_64\nL:GPL-2.0-only\n',
        'P:ca-certificates-bundle\nV:20240705-r0\nA:x86_64\nL:MPL-2.0 AND MIT\n',
        'P:oldstyle\nV:1.0-r0\nA:x86_64\nL:GPL2+\n',
      ].join('\n'),
    });
    link(root, 'lib', 'usr/lib');
    const r = await scanRootfs(root);
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(
      r.packages.map((p) => [p.purl, p.license?.expression, p.locations]),
      [
        ['pkg:apk/alpine/busybox@1.36.1-r29?arch=x86_64&distro=alpine-3.20.3', 'GPL-2.0-only', ['/lib/apk/db/installed']],
        ['pkg:apk/alpine/ca-certificates-bundle@20240705-r0?arch=x86_64&distro=alpine-3.20.3', 'MPL-2.0 AND MIT', ['/lib/apk/db/installed']],
        ['pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.3', 'MIT', ['/lib/apk/db/installed']],
        ['pkg:apk/alpine/oldstyle@1.0-r0?arch=x86_64&distro=alpine-3.20.3', r.packages[3]!.license?.expression, ['/lib/apk/db/installed']],
      ],
    );
    assert.match(r.packages[3]!.license!.expression, /^LicenseRef-GPL2-[0-9a-f]{8}$/);
  } finally {
    removeDir(root);
  }
});

test('a hostile tree: symlinks never lead out, loops and special files are warnings, an oversized file is refused', async () => {
  const base = tempDir('hostile');
  const root = join(base, 'root');
  try {
    // Outside the tree, where an escaping symlink would land.
    writeTree(base, {
      'outside-status': 'Package: escaped\nStatus: install ok installed\nVersion: 6.6.6\nArchitecture: amd64\n',
      copyright: 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: Escaped-License\n',
    });
    writeTree(root, {
      'srv/inside-status': 'Package: inside\nVersion: 1.0\nArchitecture: amd64\n',
      'var/lib/dpkg/status.d/garbage': '\u0000\u0001 no colon here\n  continuation without a field\nPackage: junk\n',
      'var/lib/dpkg/status.d/subdir/x': '',
      'app/node_modules/broken/package.json': '{ not json',
      'app/node_modules/nameless/package.json': { description: 'a stub' },
      'app/node_modules/weird/package.json': { name: '../../etc', version: '1.0.0' },
      'v7/package-lock.json': { lockfileVersion: 7, packages: {} },
      'usr/lib/python3/dist-packages/bad-1.dist-info/METADATA': 'Metadata-Version: 2.1\nSummary: no name\n',
    });
    link(root, 'var/lib/dpkg/status', '../../../../outside-status');
    link(root, 'var/lib/dpkg/status.d/evil', join(base, 'outside-status'));
    link(root, 'var/lib/dpkg/status.d/inside', '/srv/inside-status');
    // On the host, root/usr/share/doc/inside/copyright would be the copyright file beside the tree.
    link(root, 'usr/share/doc/inside', '../../../..');
    link(root, 'etc/os-release', 'os-release');
    link(root, 'loop/a', 'b');
    link(root, 'loop/b', 'a');
    link(root, 'app/node_modules/cycle', '..');
    link(root, 'app/node_modules/abs', '/');
    link(root, 'app/node_modules/escape', base);
    execFileSync('mkfifo', [join(root, 'var/lib/dpkg/status.d/fifo')]);
    mkdirSync(join(root, 'app/node_modules/pipe'), { recursive: true });
    execFileSync('mkfifo', [join(root, 'app/node_modules/pipe/package.json')]);
    // A 2 GiB lockfile (sparse: no disk used).
    mkdirSync(join(root, 'big'));
    const fd = openSync(join(root, 'big/package-lock.json'), 'w');
    ftruncateSync(fd, 2 * 1024 * 1024 * 1024);
    closeSync(fd);
    // A lockfile nested far deeper than any recursion would survive.
    let nested = '{"version":"1.0.0"}';
    for (let i = 0; i < 20000; i++) nested = `{"version":"1.0.0","dependencies":{"deep":${nested}}}`;
    writeTree(root, { 'deep/package-lock.json': `{"lockfileVersion":1,"dependencies":{"deep":${nested}}}` });

    const r = await scanRootfs(root);
    assert.deepEqual(
      r.packages.map((p) => p.purl),
      ['pkg:deb/debian/inside@1.0?arch=amd64', 'pkg:npm/deep@1.0.0'],
      'only what is inside the tree',
    );
    assert.equal(r.packages[0]!.license, undefined, 'no license from a copyright file outside the tree');
    assert.equal(r.os, undefined);
    const text = r.warnings.join('\n');
    for (const expected of [
      /^\/etc\/os-release: too many levels of symbolic links/m,
      /^\/var\/lib\/dpkg\/status\.d\/fifo: not a regular file, skipped$/m,
      /^\/var\/lib\/dpkg\/status\.d\/subdir: not a regular file, skipped$/m,
      /^\/var\/lib\/dpkg\/status\.d\/garbage: 2 malformed lines skipped$/m,
      /^\/big\/package-lock\.json: 2147483648 bytes is more than the 268435456 read from one file, skipped$/m,
      /^\/app\/node_modules\/broken\/package\.json: not valid JSON/m,
      /^\/app\/node_modules\/weird\/package\.json: invalid package name or version, skipped$/m,
      /^\/v7\/package-lock\.json: lockfileVersion 7 is not 1, 2 or 3, skipped$/m,
      /^\/usr\/lib\/python3\/dist-packages\/bad-1\.dist-info\/METADATA: no valid Name and Version, skipped$/m,
    ]) {
      assert.match(text, expected);
    }
    assert.equal(r.warnings.length, 9, text);
    assert.ok(!text.includes('escaped') && !text.includes('Escaped'), text);
  } finally {
    removeDir(base);
  }
});

test('the walk stops at its depth and entry limits with a warning', async () => {
  const root = tempDir('limits');
  try {
    writeTree(root, {
      'a/b/c/d/e/f/node_modules/x/package.json': { name: 'x', version: '1.0.0' },
      'node_modules/y/package.json': { name: 'y', version: '1.0.0' },
    });
    const shallow = await scanRootfs(root, { maxDepth: 4 });
    assert.deepEqual(shallow.packages.map((p) => p.purl), ['pkg:npm/y@1.0.0']);
    assert.deepEqual(shallow.warnings, ['/a/b/c/d/e: deeper than 4 directories, not scanned']);
    const few = await scanRootfs(root, { maxEntries: 3 });
    assert.deepEqual(few.warnings, ['the tree has more than 3 entries: the package scan stopped there']);
    const small = await scanRootfs(root, { maxFileBytes: 10 });
    assert.deepEqual(small.packages, []);
    assert.equal(small.warnings.length, 2);
    const budget = await scanRootfs(root, { maxTotalBytes: 50 });
    assert.equal(budget.packages.length, 1);
    assert.match(budget.warnings.join('\n'), /skipped, the scan already read \d+ of its 50 bytes/);
    await assert.rejects(scanRootfs(join(root, 'missing')), /cannot scan .*missing: not a directory/);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(scanRootfs(root, { signal: ac.signal }), { name: 'AbortError' });
  } finally {
    removeDir(root);
  }
});

test('deterministic: the same tree gives the same SBOM bytes, whatever order the packages come in', async () => {
  const root = tempDir('det');
  try {
    debianTree(root);
    const opts = { name: 'app', namespaceSeed: sha256('m'), created: '2024-01-01T00:00:00Z', tsbuildVersion: '1.0.0' };
    const subject = { digest: sha256('m'), names: ['app'] };
    const a = serializeStatement(sbomStatement(spdxDocument((await scanRootfs(root)).packages, opts), subject));
    const scanned = (await scanRootfs(root)).packages;
    const b = serializeStatement(sbomStatement(spdxDocument([...scanned].reverse(), opts), subject));
    assert.equal(a.toString(), b.toString());
    assert.deepEqual(a, b);
    // The namespace follows the seed and the content; the time is the caller's.
    const other = spdxDocument(scanned, { ...opts, namespaceSeed: sha256('n') });
    assert.notEqual(other.documentNamespace, spdxDocument(scanned, opts).documentNamespace);
    assert.notEqual(spdxDocument(scanned.slice(1), opts).documentNamespace, spdxDocument(scanned, opts).documentNamespace);
    assert.equal(spdxDocument(scanned, { ...opts, created: new Date('2024-01-01T00:00:00Z') }).creationInfo.created, '2024-01-01T00:00:00Z');
  } finally {
    removeDir(root);
  }
});
