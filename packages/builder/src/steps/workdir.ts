/**
 * WORKDIR: sets the working directory and, as BuildKit does, creates it (owned by the USER in
 * effect when it did not exist). A directory that already exists makes no layer.
 */
import { chown, mkdir } from 'node:fs/promises';
import { posix } from 'node:path';
import type { WorkdirInstruction } from '@tsbuild/dockerfile';
import { secureJoin } from '@tsbuild/layer';
import { exists } from '@tsbuild/store';
import { cacheKey } from '../cache.ts';
import { resolveUser } from '../chown.ts';
import { containerConfig } from '../state.ts';
import type { ImageState } from '../state.ts';
import type { StepCtx, StepKit, StepResult } from './kit.ts';

export async function workdirStep(kit: StepKit, state: ImageState, raw: WorkdirInstruction, ctx?: StepCtx): Promise<StepResult> {
  const { inst, used } = kit.expand(state, raw);
  if (ctx) ctx.inputs = { values: Object.fromEntries(used) };
  const c = containerConfig(state);
  const dir = posix.resolve(c.WorkingDir || '/', inst.path);
  const user = c.User || '';
  const key = cacheKey([state.key, 'workdir', dir, user, used]);
  const r = await kit.layerStep(
    state,
    key,
    `WORKDIR ${dir}`,
    async (active) => {
      const target = secureJoin(active.rootfs, dir, { followLast: true });
      const existed = await exists(target);
      await mkdir(target, { recursive: true, mode: 0o755 });
      if (!existed && user && user !== 'root' && user !== '0') {
        const u = await resolveUser(user, active.rootfs);
        await chown(target, u.uid, u.gid);
      }
    },
    // An existing directory is found in the parent's layers, without mounting them.
    { emptyIfUnchanged: true, unchanged: async () => (await kit.isParentDir(state, dir)) === true },
  );
  containerConfig(r.state).WorkingDir = dir;
  return r;
}
