import { readFileSync } from 'node:fs';

let userns: boolean | undefined;

/**
 * Whether this process runs in a user namespace other than the initial one, whose map is the
 * identity over every id (`0 0 4294967295`). Layers are written and applied differently there
 * (no device nodes, user.* overlay xattrs), overlays mounted with userxattr, runc run rootless.
 */
export function inUserNamespace(): boolean {
  if (userns === undefined) {
    let text = '';
    try {
      text = readFileSync('/proc/self/uid_map', 'utf8');
    } catch {
      // No /proc: nothing to tell; behave as the initial namespace.
    }
    const lines = text.trim().split('\n').map((l) => l.trim().split(/\s+/).join(' '));
    userns = text !== '' && !(lines.length === 1 && lines[0] === '0 0 4294967295');
  }
  return userns;
}
