/**
 * RUN: the command line (shell or exec form, heredocs), its environment (ENV, ARGs in scope,
 * proxy build args), user and working directory, network and security mode, and its mounts
 * (cache, bind, tmpfs, secret). The key names everything that can change what the step writes.
 */
import { chmod, chown, lstat, mkdir, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Writable } from 'node:stream';
import { createHash } from 'node:crypto';
import type { RunInstruction } from '@tsbuild/dockerfile';
import { run as runContainer, unappliedLimits } from '@tsbuild/executor';
import type { Rlimit, RunMount, RunOptions, Usage } from '@tsbuild/executor';
import { secureJoin } from '@tsbuild/layer';
import { exists, withLock } from '@tsbuild/store';
import { cacheKey } from '../cache.ts';
import { resolveUser } from '../chown.ts';
import { runCreatedBy } from '../history.ts';
import { PROXY_ARGS } from '../platform.ts';
import { agentSocket } from '../ssh.ts';
import { containerConfig, DEFAULT_PATH, envList, shellOf, topChain } from '../state.ts';
import type { ImageState } from '../state.ts';
import { runCleanups, summary } from './kit.ts';
import { span } from '../trace.ts';
import type { StepCtx, StepKit, StepResult } from './kit.ts';

type Cleanup = (() => Promise<void>)[];

/** Builds already told that their --memory, --cpus or --pids-limit cannot be applied here: one warning each. */
const limitsWarned = new WeakSet<object>();

async function warnUnappliedLimits(kit: StepKit): Promise<void> {
  if (limitsWarned.has(kit.s)) return;
  limitsWarned.add(kit.s);
  const warning = await unappliedLimits(kit.s.opts.limits);
  if (warning !== undefined) kit.s.warn(warning);
}

/** What the build's flags give every RUN step: `--add-host`, `--ulimit`, `--shm-size` and `--ssh`. */
export interface RunSettings {
  extraHosts?: { host: string; ip: string }[];
  ulimits?: Rlimit[];
  /** Bytes of /dev/shm. */
  shmSize?: number;
  /** `--ssh` by id: an agent socket, or key files for an agent of the step's own. */
  ssh?: Record<string, string[]>;
}

/**
 * Hosts, limits and the size of /dev/shm change what a step may do, so they are part of its key
 * (BuildKit keeps them in the exec op). Nothing is added when none is set, so keys stay as they
 * were. `--ssh` is not here: like BuildKit, a step is keyed by its ssh mount (id, target, mode,
 * owner), never by the agent or the keys behind it.
 */
function settingsKey(r: RunSettings): unknown[] {
  const hosts = (r.extraHosts ?? []).map((h) => `${h.host}=${h.ip}`);
  const ulimits = (r.ulimits ?? []).map((u) => `${u.type}=${u.soft}:${u.hard}`).sort();
  if (hosts.length === 0 && ulimits.length === 0 && r.shmSize === undefined) return [];
  return [{ hosts, ulimits, shm: r.shmSize ?? null }];
}

export async function runStep(kit: StepKit, state: ImageState, raw: RunInstruction, ctx: StepCtx): Promise<StepResult> {
  const { inst } = kit.expand(state, raw);
  const c = containerConfig(state);
  const { env, argsForHistory } = runEnv(kit, state);
  const argv = runArgv(inst, shellOf(state));
  const network = inst.network && inst.network !== 'default' ? inst.network : kit.s.opts.network;
  // Proxy settings reach the step but, as in Docker, do not make it a different step.
  const keyEnv = env.filter((kv) => !PROXY_ARGS.has(kv.slice(0, kv.indexOf('='))) || state.args.has(kv.slice(0, kv.indexOf('='))));
  ctx.inputs = { values: Object.fromEntries(keyEnv.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])) };
  const settings = kit.s.opts.run ?? {};
  const key = cacheKey([
    state.key, 'run', argv, keyEnv, c.User ?? '', c.WorkingDir ?? '', network, await mountKeys(kit, inst), inst.security ?? '', ...settingsKey(settings),
  ]);
  let usage: Usage | undefined;
  const result = await kit.layerStep(state, key, runCreatedBy(argv, argsForHistory), async (active) => {
    const cwd = c.WorkingDir || '/';
    await mkdir(secureJoin(active.rootfs, cwd, { followLast: true }), { recursive: true });
    const user = await resolveUser(c.User || 'root', active.rootfs);
    // As under Docker, a step without HOME in its environment gets the user's home directory.
    if (!env.some((kv) => kv.startsWith('HOME='))) env.push(`HOME=${user.home}`);
    const cleanup: Cleanup = [];
    try {
      const mounts = await runMounts(kit, inst, cwd, cleanup, env);
      const created = await recordMountpoints(active.rootfs, mounts.map((m) => m.destination));
      const runOpts: RunOptions = {
        rootfs: active.rootfs,
        args: argv,
        env,
        cwd,
        user,
        network: network === 'host' || network === 'default' ? 'host' : 'none',
        mounts,
        limits: kit.s.opts.limits,
        stateDir: kit.s.stateDir,
        extraHosts: settings.extraHosts ?? [],
        stdout: logSink(kit, ctx, 'stdout'),
        stderr: logSink(kit, ctx, 'stderr'),
        signal: kit.s.opts.signal,
      };
      if (kit.s.opts.runtime) runOpts.runtime = kit.s.opts.runtime;
      if (settings.ulimits && settings.ulimits.length > 0) runOpts.rlimits = settings.ulimits;
      if (settings.shmSize !== undefined) runOpts.shmSize = settings.shmSize;
      await warnUnappliedLimits(kit);
      const res = await span('runtime.run', () => runContainer(runOpts));
      usage = res.usage;
      await removeCreatedMountpoints(created);
      kit.s.checkAbort();
      if (res.exitCode !== 0) {
        const tail = ctx.tail.slice(-10);
        throw kit.fail(
          inst,
          `${summary(inst)}: exit code ${res.exitCode}${res.signal ? ` (${res.signal})` : ''}` +
            (tail.length > 0 ? `\n${tail.map((l) => `  > ${l}`).join('\n')}` : ''),
          'no layer was written and the cache is unchanged',
        );
      }
    } finally {
      await runCleanups(cleanup);
    }
  });
  return usage ? { ...result, usage } : result;
}

/** The step's environment: ENV, then ARGs in scope, then the proxy build args (never in history). */
function runEnv(kit: StepKit, state: ImageState): { env: string[]; argsForHistory: [string, string][] } {
  const list = [...envList(state)];
  const envKeys = new Set(list.map((kv) => kv.split('=')[0]));
  if (!envKeys.has('PATH')) list.push(`PATH=${DEFAULT_PATH}`);
  const hist: [string, string][] = [];
  for (const [k, v] of state.args) {
    if (!envKeys.has(k)) list.push(`${k}=${v}`);
    if (!PROXY_ARGS.has(k)) hist.push([k, v]);
  }
  for (const k of PROXY_ARGS) {
    const v = kit.env.buildArgs[k];
    if (v !== undefined && !state.args.has(k) && !envKeys.has(k)) {
      list.push(`${k}=${v}`);
      kit.env.consumed.add(k);
    }
  }
  return { env: list, argsForHistory: hist };
}

/** What each mount contributes to the key: the context's content, a stage's layers, a secret's name. */
async function mountKeys(kit: StepKit, inst: RunInstruction): Promise<unknown[]> {
  const keys: unknown[] = [];
  for (const m of inst.mounts) {
    if (m.type === 'bind' && m.from === undefined) keys.push([m.spec, await kit.env.contextKey()]);
    else if ((m.type === 'bind' || m.type === 'cache') && m.from !== undefined) {
      const src = await kit.fromState(m.from, inst);
      keys.push([m.spec, topChain(src) ?? 'scratch']);
    } else if (m.type === 'secret') keys.push([m.type, m.id, m.target, m.env]);
    else keys.push([m.spec]);
  }
  return keys;
}

function runArgv(inst: RunInstruction, shell: string[]): string[] {
  if (inst.cmd.form === 'exec') return [...inst.cmd.args];
  const cmd = inst.cmd.command.trim();
  const only = inst.heredocs.length === 1 ? inst.heredocs[0] : undefined;
  if (only && /^<<-?\s*["']?[^\s"']+["']?$/.test(cmd)) {
    // `RUN <<EOF` alone runs the body as the script; a shebang picks the interpreter.
    const body = only.content;
    if (body.startsWith('#!')) {
      const interp = body.split('\n')[0]!.slice(2).trim().split(/\s+/);
      return [...interp, '-c', body.split('\n').slice(1).join('\n')];
    }
    return [...shell, body];
  }
  if (inst.heredocs.length > 0) {
    // The shell reads the heredocs itself: pass the command with the bodies appended.
    let script = cmd;
    for (const h of inst.heredocs) script += `\n${h.content}${h.name}`;
    return [...shell, script];
  }
  return [...shell, inst.cmd.command];
}

/** Collects the last lines of output for a failed step's error message, and forwards chunks. */
function logSink(kit: StepKit, ctx: StepCtx, stream: 'stdout' | 'stderr'): Writable {
  const emit = kit.s.opts.emit;
  let partial = '';
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      const data = chunk.toString('utf8');
      emit({ type: 'step-log', time: Date.now(), id: ctx.id, stream, data });
      const lines = (partial + data).split('\n');
      partial = lines.pop() ?? '';
      ctx.tail.push(...lines);
      if (ctx.tail.length > 50) ctx.tail.splice(0, ctx.tail.length - 50);
      cb();
    },
    final(cb) {
      if (partial) ctx.tail.push(partial);
      cb();
    },
  });
}

async function runMounts(kit: StepKit, inst: RunInstruction, cwd: string, cleanup: Cleanup, env: string[]): Promise<RunMount[]> {
  const out: RunMount[] = [];
  let sshCount = 0;
  for (const m of inst.mounts) {
    // As in BuildKit: the n-th ssh mount of a RUN defaults to /run/buildkit/ssh_agent.<n>.
    const target = m.target ?? (m.type === 'secret' ? `/run/secrets/${m.id ?? ''}` : m.type === 'ssh' ? `/run/buildkit/ssh_agent.${sshCount}` : undefined);
    if (target === undefined && m.type !== 'secret') throw kit.fail(inst, `--mount=${m.spec}: target is required`);
    const abs = target === undefined ? undefined : posix.resolve(cwd, target);
    switch (m.type) {
      case 'tmpfs': {
        const t: RunMount = { type: 'tmpfs', destination: abs as string };
        if (m.size !== undefined) t.size = m.size;
        out.push(t);
        break;
      }
      case 'cache': {
        const id = m.id ?? (abs as string);
        // Ids are hashed to directory names, so no id can name a path outside the cache dir.
        const name = createHash('sha256').update(`${m.from ?? ''}\0${id}`).digest('hex').slice(0, 32);
        let dir = await kit.s.cacheMountDir(name, id);
        // locked: one step at a time uses the cache; private: a step that finds it in use gets
        // a fresh throwaway one; shared (the default): everyone at once.
        if (m.sharing === 'locked' || m.sharing === 'private') {
          const held = await holdLock(kit, `${dir}.lock`, m.sharing === 'locked' ? 3_600_000 : 0);
          if (held) cleanup.push(held);
          else {
            dir = await kit.tempDir('cache-private-');
            const d = dir;
            cleanup.push(() => rm(d, { recursive: true, force: true }));
          }
        }
        if ((await readdir(dir)).length === 0) {
          await chmod(dir, m.mode ?? 0o755);
          await chown(dir, m.uid ?? 0, m.gid ?? 0);
        }
        out.push({ type: 'bind', source: dir, destination: abs as string, readonly: m.readonly });
        break;
      }
      case 'bind': {
        const rootDir = m.from === undefined ? (await kit.env.context()).root : await kit.view(await kit.fromState(m.from, inst), cleanup);
        const src = secureJoin(rootDir, m.source ?? '/', { followLast: true });
        if (!(await exists(src))) throw kit.fail(inst, `--mount=${m.spec}: source "${m.source ?? '/'}" not found`);
        // A context bind is read-only: writes from the build must never reach the user's files.
        out.push({ type: 'bind', source: src, destination: abs as string, readonly: m.from === undefined ? true : m.readonly });
        break;
      }
      case 'ssh': {
        const id = m.id ?? 'default';
        if (m.source !== undefined) throw kit.fail(inst, `--mount=${m.spec}: ssh does not support source`);
        // The first ssh mount is the step's agent, unless the step sets SSH_AUTH_SOCK itself.
        if (sshCount++ === 0 && !env.some((kv) => kv.startsWith('SSH_AUTH_SOCK='))) env.push(`SSH_AUTH_SOCK=${abs as string}`);
        const paths = kit.s.opts.run?.ssh?.[id];
        if (paths === undefined) {
          if (m.required) throw kit.fail(inst, `ssh agent "${id}" is required but was not provided`, `pass it with --ssh ${id === 'default' ? 'default' : `${id}=SOCKET_OR_KEYFILE`}`);
          break;
        }
        const sock = await agentSocket(id, paths, { uid: m.uid ?? 0, gid: m.gid ?? 0, mode: m.mode ?? 0o600 });
        cleanup.push(() => sock.close());
        out.push({ type: 'bind', source: sock.path, destination: abs as string, readonly: true });
        break;
      }
      case 'secret': {
        const id = m.id ?? '';
        const spec = kit.env.secrets[id];
        let value: Buffer | undefined;
        if (spec?.file !== undefined) value = await readFile(spec.file);
        else if (spec?.env !== undefined && process.env[spec.env] !== undefined) value = Buffer.from(process.env[spec.env] as string);
        if (value === undefined) {
          if (m.required) throw kit.fail(inst, `secret "${id}" is required but was not provided`, `pass it with --secret id=${id},src=FILE`);
          break;
        }
        if (m.env !== undefined) env.push(`${m.env}=${value.toString('utf8')}`);
        if (abs !== undefined || m.env === undefined) {
          const dir = await kit.tempDir('secret-');
          cleanup.push(() => rm(dir, { recursive: true, force: true }));
          const f = join(dir, 'value');
          await writeFile(f, value, { mode: 0o600 });
          await chown(f, m.uid ?? 0, m.gid ?? 0);
          await chmod(f, m.mode ?? 0o400);
          out.push({ type: 'bind', source: f, destination: abs ?? `/run/secrets/${id}`, readonly: true });
        }
        break;
      }
    }
  }
  return out;
}

/** Takes a lock file and keeps it until the returned release is called; undefined if busy past the timeout. */
async function holdLock(kit: StepKit, file: string, timeoutMs: number): Promise<(() => Promise<void>) | undefined> {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let done!: Promise<unknown>;
  const acquired = await new Promise<boolean>((resolve) => {
    done = withLock(file, async () => {
      resolve(true);
      await held;
    }, { timeoutMs, signal: kit.s.opts.signal }).catch(() => resolve(false));
  });
  if (!acquired) return undefined;
  return async () => {
    release();
    await done;
  };
}

/** Paths (mount targets and their parents) that the runtime will create as mountpoints. */
async function recordMountpoints(rootfs: string, targets: string[]): Promise<string[]> {
  const created: string[] = [];
  for (const t of targets) {
    const parts = posix.resolve('/', t).split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const p = secureJoin(rootfs, '/' + parts.slice(0, i).join('/'), { followLast: true });
      if (!(await exists(p)) && !created.includes(p)) created.push(p);
    }
  }
  return created;
}

/** Removes mountpoints the runtime created (deepest first), if they are still empty. */
async function removeCreatedMountpoints(created: string[]): Promise<void> {
  for (const p of [...created].sort((a, b) => b.length - a.length)) {
    try {
      const st = await lstat(p);
      if (st.isDirectory()) await rmdir(p);
      else if (st.size === 0) await rm(p);
    } catch {
      // Not empty (the step wrote there) or already gone: leave it.
    }
  }
}
