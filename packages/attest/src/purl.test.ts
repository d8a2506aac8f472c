import { test } from 'node:test';
import assert from 'node:assert/strict';
import { conjoin, declaredLicense, dep5License, licenseRefId } from './license.ts';
import { debPurl, dockerImagePurl, formatPurl, npmPurl, purlEncode, pypiPurl, splitImageReference } from './purl.ts';

test('purls match the purl specification\'s own build test vectors', () => {
  assert.equal(debPurl('debian', 'attr', '1:2.4.47-2+b1', { arch: 'amd64' }), 'pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64');
  assert.equal(debPurl('debian', 'curl', '7.50.3-1', { arch: 'i386', distro: 'jessie' }), 'pkg:deb/debian/curl@7.50.3-1?arch=i386&distro=jessie');
  assert.equal(pypiPurl('My.PyPI_.--._Package', '1.11.1.dev1'), 'pkg:pypi/my-pypi-package@1.11.1.dev1');
  assert.equal(pypiPurl('django-allauth', '12.23'), 'pkg:pypi/django-allauth@12.23');
  assert.equal(npmPurl('@angular/animation', '12.3.1'), 'pkg:npm/%40angular/animation@12.3.1');
  assert.equal(npmPurl('foobar', '12.3.1'), 'pkg:npm/foobar@12.3.1');
  assert.equal(
    formatPurl({ type: 'docker', namespace: 'customer', name: 'dockerimage', version: 'sha256:244fd47e07d10', qualifiers: { repository_url: 'gcr.io' } }),
    'pkg:docker/customer/dockerimage@sha256:244fd47e07d10?repository_url=gcr.io',
  );
  assert.equal(formatPurl({ type: 'docker', name: 'cassandra', version: 'latest' }), 'pkg:docker/cassandra@latest');
});

test('purl encoding: only letters, digits, .-_~ and : stay as they are', () => {
  assert.equal(purlEncode('a b+c/d@e?f#g%h'), 'a%20b%2Bc%2Fd%40e%3Ff%23g%25h');
  assert.equal(purlEncode("x!'()*"), 'x%21%27%28%29%2A');
  assert.equal(purlEncode('é'), '%C3%A9');
  assert.equal(purlEncode('1:2.3~rc1_x-y'), '1:2.3~rc1_x-y');
  assert.equal(debPurl('debian', 'libstdc++6', '12.2.0-14', { arch: 'amd64' }), 'pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64');
  assert.equal(formatPurl({ type: 'npm', name: 'a', version: '1', qualifiers: { b: '', a: 'x y' } }), 'pkg:npm/a@1?a=x%20y');
  assert.throws(() => formatPurl({ type: '1bad', name: 'x' }), /invalid purl type/);
});

test('image references split as Docker names them, and their purls are familiar names with the registry in repository_url', () => {
  assert.deepEqual(splitImageReference('debian:bookworm'), { domain: 'docker.io', path: 'library/debian', tag: 'bookworm' });
  assert.deepEqual(splitImageReference('docker.io/user/img'), { domain: 'docker.io', path: 'user/img' });
  assert.deepEqual(splitImageReference('localhost:5000/a/b:1@sha256:00'), { domain: 'localhost:5000', path: 'a/b', tag: '1', digest: 'sha256:00' });
  assert.deepEqual(splitImageReference('registry-1.docker.io/library/alpine'), { domain: 'docker.io', path: 'library/alpine' });
  const d = `sha256:${'0'.repeat(64)}`;
  assert.equal(dockerImagePurl('debian:bookworm', d, 'linux/amd64'), `pkg:docker/debian@${d}?platform=linux%2Famd64`);
  assert.equal(dockerImagePurl('docker.io/library/alpine:3.20', d), `pkg:docker/alpine@${d}`);
  assert.equal(dockerImagePurl('user/img:1', d), `pkg:docker/user/img@${d}`);
  assert.equal(dockerImagePurl('ghcr.io/acme/tools:2', d), `pkg:docker/acme/tools@${d}?repository_url=ghcr.io`);
  assert.equal(dockerImagePurl('localhost:5000/x', d), `pkg:docker/x@${d}?repository_url=localhost:5000`);
  assert.throws(() => splitImageReference('a//b'), /invalid image reference/);
});

test('DEP-5 short names become SPDX ids where they mean the same, LicenseRefs otherwise, with DEP-5 precedence', () => {
  const refs: Record<string, string> = {};
  assert.equal(dep5License('GPL-2+', refs), 'GPL-2.0-or-later');
  assert.equal(dep5License('GPL-2', refs), 'GPL-2.0-only');
  assert.equal(dep5License('LGPL-2.1+', refs), 'LGPL-2.1-or-later');
  assert.equal(dep5License('GFDL-1.3+', refs), 'GFDL-1.3-or-later');
  assert.equal(dep5License('Expat', refs), 'MIT');
  assert.equal(dep5License('BSD-3-clause', refs), 'BSD-3-Clause');
  assert.equal(dep5License('Apache-2.0', refs), 'Apache-2.0');
  assert.equal(dep5License('zlib', refs), 'Zlib');
  assert.equal(dep5License('GPL-1+ or Artistic', refs), 'GPL-1.0-or-later OR LicenseRef-Artistic');
  assert.equal(dep5License('GPL-2+ or Artistic-2.0, and BSD-3-clause', refs), '(GPL-2.0-or-later OR Artistic-2.0) AND BSD-3-Clause');
  assert.equal(dep5License('LGPL-2.1+ and GPL-2+ or MIT', refs), '(LGPL-2.1-or-later AND GPL-2.0-or-later) OR MIT');
  assert.equal(dep5License('public-domain\n This work is in the public domain.', refs), 'LicenseRef-public-domain');
  const withException = dep5License('GPL-3+ with Bison exception', refs)!;
  assert.match(withException, /^LicenseRef-GPL-3-with-Bison-exception-[0-9a-f]{8}$/);
  assert.deepEqual(refs, { 'LicenseRef-Artistic': 'Artistic', 'LicenseRef-public-domain': 'public-domain', [withException]: 'GPL-3+ with Bison exception' });
  assert.equal(conjoin(['MIT', 'GPL-2.0-only OR MIT', 'MIT']), '(GPL-2.0-only OR MIT) AND MIT');
  assert.equal(conjoin([]), undefined);
});

test('declared licenses: SPDX expressions kept, other names as LicenseRefs, license texts unknown', () => {
  assert.deepEqual(declaredLicense('MIT'), { expression: 'MIT', refs: {} });
  assert.deepEqual(declaredLicense('(MIT OR Apache-2.0)'), { expression: '(MIT OR Apache-2.0)', refs: {} });
  assert.deepEqual(declaredLicense('apache-2.0'), { expression: 'Apache-2.0', refs: {} });
  const see = declaredLicense('SEE LICENSE IN LICENSE.md')!;
  assert.match(see.expression, /^LicenseRef-SEE-LICENSE-IN-LICENSE.md-[0-9a-f]{8}$/);
  assert.deepEqual(see.refs, { [see.expression]: 'SEE LICENSE IN LICENSE.md' });
  assert.equal(declaredLicense('Copyright (c) 2020 Someone\n\nPermission is hereby granted...'), undefined);
  assert.equal(declaredLicense('UNKNOWN'), undefined);
  assert.equal(declaredLicense(''), undefined);
  assert.equal(licenseRefId('GPL-2'), 'LicenseRef-GPL-2');
  assert.notEqual(licenseRefId('GPL 2'), licenseRefId('GPL-2'));
});
