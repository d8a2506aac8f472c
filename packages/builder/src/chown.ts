import { readFile } from 'node:fs/promises';
import { TsbuildError } from '@tsbuild/errors';
import { secureJoin } from '@tsbuild/layer';

export interface Owner {
  uid: number;
  gid: number;
}

export interface ExecUser extends Owner {
  /** Supplementary groups from the image's /etc/group (only when no group was named). */
  additionalGids: number[];
  /** The home directory for HOME: the passwd entry's, else `/root` for uid 0 and `/` otherwise. */
  home: string;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const ID = /^[0-9]+$/;
const MAX_ID = 0xffffffff - 1;

function parseId(text: string, what: string, spec: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n > MAX_ID) {
    throw new TsbuildError('BAD_USER', `invalid ${what} id "${text}" in "${spec}"`);
  }
  return n;
}

/** Reads `/etc/<name>` of an image root; a missing file is `undefined`. */
async function readImageFile(rootfs: string, file: string): Promise<string | undefined> {
  const abs = secureJoin(rootfs, file, { followLast: true });
  try {
    return await readFile(abs, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new TsbuildError('IMAGE_FILE', `cannot read ${file} in the image: ${(e as Error).message}`, { cause: e });
  }
}

function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(':');
    if (f.length < 4 || f[0] === '' || !ID.test(f[2] ?? '') || !ID.test(f[3] ?? '')) continue;
    out.push({ name: f[0] as string, uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '' });
  }
  return out;
}

function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(':');
    if (f.length < 3 || f[0] === '' || !ID.test(f[2] ?? '')) continue;
    const members = (f[3] ?? '').split(',').map((m) => m.trim()).filter((m) => m !== '');
    out.push({ name: f[0] as string, gid: Number(f[2]), members });
  }
  return out;
}

function splitSpec(spec: string): [string, string | undefined] {
  const trimmed = spec.trim();
  if (trimmed === '') throw new TsbuildError('BAD_USER', 'empty user specification');
  const i = trimmed.indexOf(':');
  if (i < 0) return [trimmed, undefined];
  const user = trimmed.slice(0, i);
  const group = trimmed.slice(i + 1);
  if (user === '' || group === '') throw new TsbuildError('BAD_USER', `invalid user specification "${spec}"`);
  return [user, group];
}

async function lookupGroup(rootfs: string, group: string, spec: string): Promise<number> {
  if (ID.test(group)) return parseId(group, 'group', spec);
  const text = await readImageFile(rootfs, '/etc/group');
  if (text === undefined) {
    throw new TsbuildError('UNKNOWN_GROUP', `unable to find group ${group}: the image has no /etc/group`);
  }
  const hit = parseGroup(text).find((g) => g.name === group);
  if (!hit) throw new TsbuildError('UNKNOWN_GROUP', `unable to find group ${group}: no matching entry in /etc/group`);
  return hit.gid;
}

/**
 * `COPY --chown` owner, with BuildKit's rules: a numeric user alone means uid:uid; a user name
 * takes its uid and primary gid from the image's /etc/passwd; a group overrides the gid.
 */
export async function resolveChown(spec: string, rootfs: string): Promise<Owner> {
  const [user, group] = splitSpec(spec);
  let uid: number;
  let gid: number;
  if (ID.test(user)) {
    uid = parseId(user, 'user', spec);
    gid = uid;
  } else {
    const text = await readImageFile(rootfs, '/etc/passwd');
    if (text === undefined) {
      throw new TsbuildError('UNKNOWN_USER', `unable to find user ${user}: the image has no /etc/passwd`);
    }
    const hit = parsePasswd(text).find((p) => p.name === user);
    if (!hit) throw new TsbuildError('UNKNOWN_USER', `unable to find user ${user}: no matching entry in /etc/passwd`);
    uid = hit.uid;
    gid = hit.gid;
  }
  if (group !== undefined) gid = await lookupGroup(rootfs, group, spec);
  return { uid, gid };
}

/**
 * The process identity for `USER` (as runc resolves it): a numeric uid not in /etc/passwd runs
 * with gid 0; supplementary groups are the /etc/group entries listing the user, added only when
 * no group was given.
 */
export async function resolveUser(spec: string, rootfs: string): Promise<ExecUser> {
  const [user, group] = splitSpec(spec);
  const passwdText = await readImageFile(rootfs, '/etc/passwd');
  const passwd = passwdText === undefined ? [] : parsePasswd(passwdText);
  let entry: PasswdEntry | undefined;
  let uid: number;
  let gid = 0;
  if (ID.test(user)) {
    uid = parseId(user, 'user', spec);
    entry = passwd.find((p) => p.uid === uid);
  } else {
    entry = passwd.find((p) => p.name === user);
    if (!entry) {
      const why = passwdText === undefined ? 'the image has no /etc/passwd' : 'no matching entry in /etc/passwd';
      throw new TsbuildError('UNKNOWN_USER', `unable to find user ${user}: ${why}`);
    }
    uid = entry.uid;
  }
  if (entry) gid = entry.gid;
  const additionalGids: number[] = [];
  if (group !== undefined) {
    gid = await lookupGroup(rootfs, group, spec);
  } else if (entry) {
    const groupText = await readImageFile(rootfs, '/etc/group');
    if (groupText !== undefined) {
      for (const g of parseGroup(groupText)) {
        if (g.members.includes(entry.name) && g.gid !== gid && !additionalGids.includes(g.gid)) additionalGids.push(g.gid);
      }
    }
  }
  const home = entry?.home && entry.home.startsWith('/') ? entry.home : uid === 0 ? '/root' : '/';
  return { uid, gid, additionalGids, home };
}
