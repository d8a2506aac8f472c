import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DockerfileError } from '@tsbuild/errors';
import { parseCsvRecord, parseMount } from './mount.ts';
import type { Mount } from './mount.ts';

test('mount specs parse with BuildKit defaults', () => {
  const cases: Array<[string, Partial<Mount>]> = [
    ['target=/src', { type: 'bind', target: '/src', readonly: true }],
    ['type=bind,src=.,dst=/src,rw', { type: 'bind', source: '.', target: '/src', readonly: false }],
    ['type=bind,from=build,source=/out,target=/in,readwrite=true', { from: 'build', source: '/out', readonly: false }],
    ['type=bind,target=/a,ro=false,ro', { readonly: true }],
    ['type=bind,target=/a,rw,readonly=1', { readonly: true }],
    ['type=cache,target=/root/.cache', { type: 'cache', id: '/root/.cache', sharing: 'shared', readonly: false }],
    ['type=cache,id=go,target=/go,sharing=LOCKED,mode=0755,uid=1000,gid=1000', { id: 'go', sharing: 'locked', mode: 0o755, uid: 1000, gid: 1000 }],
    ['type=cache,target=/c,sharing=private,ro', { sharing: 'private', readonly: true }],
    ['TYPE=Cache,Destination=/c', { type: 'cache', target: '/c' }],
    ['type=tmpfs,target=/tmp,size=64m', { type: 'tmpfs', target: '/tmp', size: 64 * 2 ** 20, readonly: false }],
    ['type=tmpfs,dest=/t,size=1.5GiB', { size: 1.5 * 2 ** 30 }],
    ['type=tmpfs,target=/t,size=4096', { size: 4096 }],
    ['type=secret,id=npmrc', { type: 'secret', id: 'npmrc', target: '/run/secrets/npmrc', required: false, readonly: true }],
    ['type=secret,id=tok,target=/etc/tok,required', { target: '/etc/tok', required: true }],
    ['type=secret,id=tok,env=TOKEN', { env: 'TOKEN', target: undefined }],
    ['type=secret,id=tok,env=TOKEN,target=/t', { env: 'TOKEN', target: '/t' }],
    ['type=secret,target=/run/app/key.pem', { id: 'key.pem', target: '/run/app/key.pem' }],
    ['type=secret,source=aws,mode=0400,uid=1', { id: 'aws', target: '/run/secrets/aws', mode: 0o400, uid: 1 }],
    ['type=ssh', { type: 'ssh', id: 'default', readonly: true }],
    ['type=ssh,id=gh,required=true,target=/ssh.sock', { id: 'gh', required: true, target: '/ssh.sock' }],
    ['"target=/a,b",type=bind', { target: '/a,b' }],
    ['type=cache,"target=/with ""quote"""', { target: '/with "quote"' }],
    ['type=cache,target=$DIR,id=${ID}', { target: '$DIR', id: '${ID}' }],
    ['type=$T,target=/x,mode=$M', { type: 'bind', target: '/x', mode: undefined }],
  ];
  for (const [spec, want] of cases) {
    const m = parseMount(spec);
    assert.equal(m.spec, spec);
    for (const [k, v] of Object.entries(want)) assert.deepEqual(m[k as keyof Mount], v, `${spec}: ${k}`);
  }
});

test('mount values expand before they are validated', () => {
  const vars: Record<string, string> = { T: 'cache', M: '0700', DIR: '/cache', ID: 'x' };
  const expand = (w: string): string => w.replace(/\$\{?(\w+)\}?/g, (_, n: string) => vars[n] ?? '');
  const m = parseMount('type=$T,target=$DIR,id=${ID},mode=$M', { expand });
  assert.deepEqual(
    { type: m.type, target: m.target, id: m.id, mode: m.mode, sharing: m.sharing },
    { type: 'cache', target: '/cache', id: 'x', mode: 0o700, sharing: 'shared' },
  );
  vars.M = '9';
  assert.throws(() => parseMount('type=$T,target=/c,mode=$M', { expand }), /invalid value 9 for mode/);
});

test('bad mount specs fail with a message naming the field', () => {
  const cases: Array<[string, RegExp]> = [
    ['type=volume,target=/x', /unsupported mount type "volume"/],
    ['type=bind', /mount type bind requires a target/],
    ['type=cache', /mount type cache requires a target/],
    ['type=tmpfs', /mount type tmpfs requires a target/],
    ['target=/x,bogus=1', /unexpected key 'bogus'/],
    ['target', /invalid field 'target' must be a key=value pair/],
    ['target=/x,ro=maybe', /invalid value for ro: maybe/],
    ['target=/x,rw=2', /invalid value for rw: 2/],
    ['target=/x,required', /unexpected key 'required' for mount type 'bind'/],
    ['type=cache,target=/x,size=1m', /unexpected key 'size' for mount type 'cache'/],
    ['type=tmpfs,target=/x,size=lots', /invalid value for size: lots/],
    ['target=/x,sharing=shared', /invalid cache sharing set for bind mount/],
    ['type=cache,target=/x,sharing=everyone', /unsupported sharing value "everyone"/],
    ['type=cache,target=/x,mode=0999', /invalid value 0999 for mode/],
    ['type=cache,target=/x,uid=-1', /invalid value -1 for uid/],
    ['type=cache,target=/x,gid=abc', /invalid value abc for gid/],
    ['type=cache,target=/x,uid=4294967296', /invalid value 4294967296 for uid/],
    ['target=/x,mode=0644', /mode not allowed for "bind" type mounts/],
    ['type=tmpfs,target=/x,uid=0', /uid not allowed for "tmpfs" type mounts/],
    ['type=cache,target=/x,env=A', /unexpected key 'env' for mount type 'cache'/],
    ['type=secret,id=a,from=build', /secret mount should not have a from/],
    ['type=secret,id=a,source=b', /both source and id can't be set/],
    ['type=secret', /one of id, source or target is required/],
    ['type=secret,id=a,required=perhaps', /invalid value for required: perhaps/],
    ['type=ssh,from=x', /ssh mount should not have a from/],
    ['target=/x,from=$STAGE', /'from' doesn't support variable expansion/],
    ['target="/x', /bare " in non-quoted-field/],
    ['"target=/x', /extraneous or missing " in quoted-field/],
    ['"target=/x"y', /extraneous or missing " in quoted-field/],
  ];
  for (const [spec, re] of cases) {
    assert.throws(
      () => parseMount(spec),
      (e: unknown) => {
        assert.ok(e instanceof DockerfileError, spec);
        assert.match(e.detail, re, spec);
        assert.ok(e.detail.startsWith(`--mount=${spec}:`), e.detail);
        return true;
      },
    );
  }
});

test('CSV records follow Go encoding/csv', () => {
  const cases: Array<[string, string[]]> = [
    ['', ['']],
    ['a,b', ['a', 'b']],
    ['a,,b,', ['a', '', 'b', '']],
    ['"a,b",c', ['a,b', 'c']],
    ['"a""b"', ['a"b']],
    ['""', ['']],
  ];
  for (const [text, want] of cases) assert.deepEqual(parseCsvRecord(text), want, text);
});
