import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, rmdir, lstat, writeFile, chown, chmod } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Writable } from 'node:stream';
import { createHash } from 'node:crypto';
import { DockerfileError, TsbuildError, CancelledError, excerptOf } from '@tsbuild/errors';
import { envExpander, expandInstruction, formatDuration, parse, parseInstruction } from '@tsbuild/dockerfile';
import type {
  AddInstruction, CopyInstruction, Instruction, RunInstruction, Stage, Mount, ExposeInstruction, HealthcheckInstruction,
} from '@tsbuild/dockerfile';
import { diff } from '@tsbuild/layer';
import { chainIds, MediaType } from '@tsbuild/oci';
import type { Digest, HistoryEntry } from '@tsbuild/oci';
import type { Active } from '@tsbuild/snapshot';
import { withLock } from '@tsbuild/store';
import { run as runContainer } from '@tsbuild/executor';
import type { RunMount as ExecMount } from '@tsbuild/executor';
import { cacheKey } from './cache.ts';
import type { CacheRecord } from './cache.ts';
import { commandArgs, goQuoteList, runCreatedBy } from './history.ts';
import {
  addHistory, cloneState, containerConfig, diffIds, envList, expansionEnv, setEnv, shellOf, topChain, DEFAULT_PATH,
} from './state.ts';
import type { ImageState } from './state.ts';
import type { BuildSession } from './session.ts';
import { PROXY_ARGS } from './platform.ts';
import { resolveInRoot, BuildContext, SourceNotFoundError } from './context.ts';
import { copyInto } from './copy.ts';
import { resolveChown, resolveUser } from './chown.ts';
import { parseChmod } from './chmod.ts';
import { hashSources } from './hash.ts';
import { isArchive, extractArchive } from './archive.ts';
import { fetchUrl } from './fetch.ts';
import { NO_IGNORE } from './ignore.ts';

/** What a stage's steps need from the build around them. */
export interface StageEnv {
  session: BuildSession;
  file: string;
  text: string;
  escapeToken: string;
  /** The build context (with .dockerignore applied). */
  context: () => Promise<BuildContext>;
  /** Values from --build-arg. */
  buildArgs: Record<string, string>;
  /** Build args consumed by an ARG line (for the "not consumed" warning). */
  consumed: Set<string>;
  /** Global ARG defaults (before the first FROM), already expanded. */
  globalArgs: Map<string, string>;
  /** A stage's final state, by stage (for COPY --from and RUN --mount from=). */
  stageResult: (ref: string) => Promise<ImageState> | undefined;
  secrets: Record<string, { file?: string; env?: string }>;
  stageLabel: string;
  contextKey: () => Promise<string>;
}

interface StepCtx {
  id: string;
  inst: Instruction;
  /** Tail of the step's output, for the error message of a failed RUN. */
  tail: string[];
}

const LAYER_SUFFIX = ' # tsbuild';

/** Runs a stage's instructions over a base state; every step is cached by its key. */
export class StageRunner {
  private readonly s: BuildSession;
  constructor(private readonly env: StageEnv) {
    this.s = env.session;
  }

  private fail(inst: { range: Instruction['range'] }, message: string, hint?: string, cause?: unknown): DockerfileError {
    const opts: ConstructorParameters<typeof DockerfileError>[1] = {
      file: this.env.file,
      range: inst.range,
      excerpt: excerptOf(this.env.text, inst.range),
    };
    if (hint !== undefined) opts.hint = hint;
    if (cause !== undefined) opts.cause = cause;
    return new DockerfileError(message, opts);
  }

  /** Attributes any non-location error of a step to the step's Dockerfile line. */
  private wrap(inst: Instruction, e: unknown): unknown {
    if (e instanceof DockerfileError || e instanceof CancelledError) return e;
    if (e instanceof TsbuildError) return this.fail(inst, `${inst.original.split('\n')[0]}: ${e.message}`, e.hint, e);
    const err = e as NodeJS.ErrnoException;
    if (err && typeof err.code === 'string') return this.fail(inst, `${inst.kind.toUpperCase()}: ${err.message}`, undefined, e);
    return e;
  }

  async runSteps(state: ImageState, steps: Instruction[], index0: number, total: number): Promise<ImageState> {
    let cur = state;
    for (let i = 0; i < steps.length; i++) {
      const inst = steps[i] as Instruction;
      this.s.checkAbort();
      const id = this.s.nextStepId();
      const name = `[${this.env.stageLabel} ${index0 + i + 1}/${total}] ${summary(inst)}`;
      const start = Date.now();
      this.s.opts.emit({ type: 'step-start', time: start, id, name, stage: this.env.stageLabel, index: index0 + i + 1, total });
      const ctx: StepCtx = { id, inst, tail: [] };
      try {
        const r = await this.step(cur, ctx);
        cur = r.state;
        const done: Parameters<typeof this.s.opts.emit>[0] = {
          type: 'step-done', time: Date.now(), id, cached: r.cached, durationMs: Date.now() - start,
        };
        if (r.layerSize !== undefined) done.layerSize = r.layerSize;
        this.s.opts.emit(done);
      } catch (e) {
        const err = this.wrap(inst, e);
        this.s.opts.emit({ type: 'step-error', time: Date.now(), id, message: err instanceof Error ? err.message : String(err) });
        throw err;
      }
    }
    return cur;
  }

  /** Expands an instruction's words with ARG/ENV values; returns the values it read for the key. */
  private expand<T extends Instruction>(state: ImageState, inst: T): { inst: T; used: [string, string][] } {
    const env = expansionEnv(state);
    const ex = envExpander(env, { escapeToken: this.env.escapeToken });
    const out = expandInstruction(inst, ex, { file: this.env.file, text: this.env.text });
    const used = [...ex.matched].sort().map((k) => [k, env.get(k) ?? ''] as [string, string]);
    return { inst: out, used };
  }

  private async step(state: ImageState, ctx: StepCtx): Promise<{ state: ImageState; cached: boolean; layerSize?: number }> {
    const raw = ctx.inst;
    switch (raw.kind) {
      case 'run':
        return this.runStep(state, raw, ctx);
      case 'copy':
      case 'add':
        return this.copyStep(state, raw);
      case 'workdir':
        return this.workdirStep(state, raw);
      case 'from':
        throw this.fail(raw, 'FROM cannot be used here');
      default:
        return this.configStep(state, raw);
    }
  }

  // ---- config-only steps -------------------------------------------------------------------

  private async configStep(state: ImageState, raw: Instruction): Promise<{ state: ImageState; cached: boolean }> {
    const next = cloneState(state);
    const c = containerConfig(next);
    let createdBy: string;
    let keyParts: unknown[];
    if (raw.kind === 'arg') {
      // Declaring an ARG is not a cache boundary: only steps that read its value depend on it.
      const names: string[] = [];
      for (const a of raw.args) {
        let value: string | undefined;
        if (Object.hasOwn(this.env.buildArgs, a.key)) {
          value = this.env.buildArgs[a.key];
          this.env.consumed.add(a.key);
        } else if (a.value !== undefined) {
          value = this.expand(next, { ...raw, args: [{ key: a.key, value: a.value }] }).inst.args[0]?.value ?? '';
        } else if (this.env.globalArgs.has(a.key)) {
          value = this.env.globalArgs.get(a.key);
        }
        if (value !== undefined) next.args.set(a.key, value);
        else next.args.delete(a.key);
        names.push(value !== undefined ? `${a.key}=${value}` : a.key);
      }
      createdBy = `ARG ${names.join(' ')}`;
      keyParts = ['arg', raw.args.map((a) => a.key)];
    } else {
      const { inst, used } = this.expand(next, raw);
      keyParts = [inst.kind, configKeyOf(inst), used];
      createdBy = this.applyConfig(next, inst, c);
    }
    next.key = cacheKey([state.key, ...keyParts]);
    const created = await this.recordConfigStep(next.key);
    const entry: HistoryEntry = { created: created.created, created_by: createdBy, comment: 'tsbuild', empty_layer: true };
    addHistory(next, entry);
    return { state: next, cached: created.cached };
  }

  private async recordConfigStep(key: string): Promise<{ created: string; cached: boolean }> {
    if (!this.s.opts.noCache) {
      const hit = await this.s.cache.get(key);
      if (hit && !hit.layer) return { created: hit.created, cached: true };
    }
    const rec: CacheRecord = { v: 1, created: this.s.now() };
    await this.s.cache.set(key, rec);
    return { created: rec.created, cached: false };
  }

  /** Applies one expanded config instruction; returns its history `created_by`. */
  private applyConfig(next: ImageState, inst: Instruction, c: ReturnType<typeof containerConfig>): string {
    switch (inst.kind) {
      case 'env':
        for (const kv of inst.env) setEnv(next, kv.key, kv.value);
        return `ENV ${inst.env.map((kv) => `${kv.key}=${kv.value}`).join(' ')}`;
      case 'label':
        c.Labels = { ...(c.Labels ?? {}) };
        for (const kv of inst.labels) c.Labels[kv.key] = kv.value;
        return `LABEL ${inst.labels.map((kv) => `${kv.key}=${kv.value}`).join(' ')}`;
      case 'maintainer':
        next.config.author = inst.maintainer;
        return `MAINTAINER ${inst.maintainer}`;
      case 'expose': {
        c.ExposedPorts = { ...(c.ExposedPorts ?? {}) };
        const ports = exposedPorts(inst, (m) => this.fail(inst, m));
        for (const p of ports) c.ExposedPorts[p] = {};
        return `EXPOSE ${ports.join(' ')}`;
      }
      case 'volume':
        c.Volumes = { ...(c.Volumes ?? {}) };
        for (const v of inst.volumes) {
          if (v.trim() === '') throw this.fail(inst, 'VOLUME specified can not be an empty string');
          c.Volumes[v] = {};
        }
        return `VOLUME [${inst.volumes.join(' ')}]`;
      case 'user':
        c.User = inst.user;
        return `USER ${inst.user}`;
      case 'stopsignal':
        c.StopSignal = inst.signal;
        return `STOPSIGNAL ${inst.signal}`;
      case 'shell':
        c.Shell = [...inst.shell];
        return `SHELL [${inst.shell.join(' ')}]`;
      case 'cmd':
        c.Cmd = commandArgs(inst.cmd, shellOf(next));
        next.cmdSet = true;
        return `CMD ${goQuoteList(c.Cmd)}`;
      case 'entrypoint':
        c.Entrypoint = commandArgs(inst.cmd, shellOf(next));
        if (!next.cmdSet) c.Cmd = null;
        return `ENTRYPOINT ${goQuoteList(c.Entrypoint)}`;
      case 'healthcheck':
        return applyHealthcheck(c, inst);
      case 'onbuild':
        c.OnBuild = [...(c.OnBuild ?? []), inst.expression];
        return `ONBUILD ${inst.expression}`;
      default:
        throw this.fail(inst, `${inst.kind.toUpperCase()} is not a configuration instruction`);
    }
  }

  // ---- steps that make layers --------------------------------------------------------------

  /**
   * The shared shape of every layer step: look the key up; on a miss prepare an overlay over the
   * parent, let `work` change it, diff the upper dir into the store and commit the snapshot.
   */
  private async layerStep(
    state: ImageState,
    key: string,
    createdBy: string,
    work: (active: Active, next: ImageState) => Promise<void>,
    opts: { emptyIfUnchanged?: boolean; independent?: boolean } = {},
  ): Promise<{ state: ImageState; cached: boolean; layerSize?: number }> {
    const next = cloneState(state);
    next.key = key;
    if (!this.s.opts.noCache) {
      const hit = await this.s.cache.get(key);
      if (hit && (!hit.layer || (await this.s.store.hasBlob(hit.layer.diffId)))) {
        this.appendLayer(next, hit, createdBy);
        return hit.layer ? { state: next, cached: true, layerSize: hit.layer.size } : { state: next, cached: true };
      }
    }
    const rec = await this.s.heavy.run(async () => {
      // An independent layer (COPY --link) is written over an empty tree, so its bytes do not
      // depend on the layers below; its snapshot is unpacked from the blob when first needed.
      const parent = opts.independent ? undefined : await this.s.ensureSnapshots(state.layers, diffIds(state));
      const active = await this.s.snapshots.prepare(parent, this.s.opts.signal ? { signal: this.s.opts.signal } : {});
      let committed = false;
      try {
        await work(active, next);
        this.s.checkAbort();
        const created = this.s.now();
        if (opts.emptyIfUnchanged && (await readdir(active.upper)).length === 0) {
          return { v: 1, created } as CacheRecord;
        }
        const writer = this.s.store.blobWriter();
        let result: { diffId: Digest; size: number };
        try {
          const dopts: Parameters<typeof diff>[2] = {};
          if (this.s.opts.sourceDateEpoch !== undefined) dopts.sourceDateEpoch = this.s.opts.sourceDateEpoch;
          if (this.s.opts.signal) dopts.signal = this.s.opts.signal;
          result = await diff(active.upper, writer.stream, dopts);
          await writer.commit({ digest: result.diffId, size: result.size });
        } catch (e) {
          await writer.abort().catch(() => {});
          throw e;
        }
        if (!opts.independent) {
          const chain = chainIds([...diffIds(state), result.diffId]).at(-1) as Digest;
          await active.commit(chain);
          committed = true;
        }
        return { v: 1, created, layer: { diffId: result.diffId, size: result.size } } as CacheRecord;
      } finally {
        if (!committed) await active.release().catch(() => {});
      }
    });
    await this.s.cache.set(key, rec);
    this.appendLayer(next, rec, createdBy);
    return rec.layer ? { state: next, cached: false, layerSize: rec.layer.size } : { state: next, cached: false };
  }

  private appendLayer(next: ImageState, rec: CacheRecord, createdBy: string): void {
    if (rec.layer) {
      next.config.rootfs.diff_ids.push(rec.layer.diffId);
      next.layers.push({ mediaType: MediaType.OciLayer, digest: rec.layer.diffId, size: rec.layer.size });
      addHistory(next, { created: rec.created, created_by: createdBy + LAYER_SUFFIX, comment: 'tsbuild' });
    } else {
      addHistory(next, { created: rec.created, created_by: createdBy, comment: 'tsbuild', empty_layer: true });
    }
  }

  private async workdirStep(state: ImageState, raw: Extract<Instruction, { kind: 'workdir' }>) {
    const { inst, used } = this.expand(state, raw);
    const c = containerConfig(state);
    const dir = posix.resolve(c.WorkingDir || '/', inst.path);
    const user = c.User || '';
    const key = cacheKey([state.key, 'workdir', dir, user, used]);
    const r = await this.layerStep(
      state,
      key,
      `WORKDIR ${dir}`,
      async (active) => {
        const target = resolveInRoot(active.rootfs, dir);
        const existed = await exists(target);
        await mkdir(target, { recursive: true, mode: 0o755 });
        if (!existed && user && user !== 'root' && user !== '0') {
          const u = await resolveUser(user, active.rootfs);
          await chown(target, u.uid, u.gid);
        }
      },
      { emptyIfUnchanged: true },
    );
    containerConfig(r.state).WorkingDir = dir;
    return r;
  }

  private runEnv(state: ImageState): { env: string[]; argsForHistory: [string, string][] } {
    const list = [...envList(state)];
    const envKeys = new Set(list.map((kv) => kv.split('=')[0]));
    if (!envKeys.has('PATH')) list.push(`PATH=${DEFAULT_PATH}`);
    const hist: [string, string][] = [];
    for (const [k, v] of state.args) {
      if (!envKeys.has(k)) list.push(`${k}=${v}`);
      if (!PROXY_ARGS.has(k)) hist.push([k, v]);
    }
    for (const k of PROXY_ARGS) {
      const v = this.env.buildArgs[k];
      if (v !== undefined && !state.args.has(k) && !envKeys.has(k)) {
        list.push(`${k}=${v}`);
        this.env.consumed.add(k);
      }
    }
    return { env: list, argsForHistory: hist };
  }

  private async runStep(state: ImageState, raw: RunInstruction, ctx: StepCtx) {
    const { inst } = this.expand(state, raw);
    const shell = shellOf(state);
    const c = containerConfig(state);
    const { env, argsForHistory } = this.runEnv(state);
    const argv = runArgv(inst, shell);
    const network = inst.network && inst.network !== 'default' ? inst.network : this.s.opts.network;
    const createdBy = runCreatedBy(argv, argsForHistory);
    const mountKeys: unknown[] = [];
    for (const m of inst.mounts) {
      if (m.type === 'bind' && m.from === undefined) mountKeys.push([m.spec, await this.env.contextKey()]);
      else if ((m.type === 'bind' || m.type === 'cache') && m.from !== undefined) {
        const src = await this.fromState(m.from, inst);
        mountKeys.push([m.spec, topChain(src) ?? 'scratch']);
      } else if (m.type === 'secret') mountKeys.push([m.type, m.id, m.target, m.env]);
      else mountKeys.push([m.spec]);
    }
    // Proxy settings reach the step but, as in Docker, do not make it a different step.
    const keyEnv = env.filter((kv) => !PROXY_ARGS.has(kv.slice(0, kv.indexOf('='))) || state.args.has(kv.slice(0, kv.indexOf('='))));
    const key = cacheKey([state.key, 'run', argv, keyEnv, c.User ?? '', c.WorkingDir ?? '', network, mountKeys, inst.security ?? '']);
    return this.layerStep(state, key, createdBy, async (active) => {
      const cwd = c.WorkingDir || '/';
      await mkdir(resolveInRoot(active.rootfs, cwd), { recursive: true });
      const user = await resolveUser(c.User || 'root', active.rootfs);
      // As under Docker, a step without HOME in its environment gets the user's home directory.
      if (!env.some((kv) => kv.startsWith('HOME='))) env.push(`HOME=${user.home}`);
      const cleanup: (() => Promise<void>)[] = [];
      try {
        const mounts = await this.runMounts(inst, cwd, cleanup, env);
        const created = await recordMountpoints(active.rootfs, mounts.map((m) => m.destination));
        const runOpts: Parameters<typeof runContainer>[0] = {
          rootfs: active.rootfs,
          args: argv,
          env,
          cwd,
          user,
          network: network === 'host' || network === 'default' ? 'host' : 'none',
          mounts,
          limits: this.s.opts.limits,
          stateDir: this.s.stateDir,
          stdout: this.logSink(ctx, 'stdout'),
          stderr: this.logSink(ctx, 'stderr'),
        };
        if (this.s.opts.runtime) runOpts.runtime = this.s.opts.runtime;
        if (this.s.opts.signal) runOpts.signal = this.s.opts.signal;
        const res = await runContainer(runOpts);
        await removeCreatedMountpoints(created);
        this.s.checkAbort();
        if (res.exitCode !== 0) {
          const tail = ctx.tail.slice(-10);
          throw this.fail(
            inst,
            `${summary(inst)}: exit code ${res.exitCode}${res.signal ? ` (${res.signal})` : ''}` +
              (tail.length > 0 ? `\n${tail.map((l) => `  > ${l}`).join('\n')}` : ''),
            'no layer was written and the cache is unchanged',
          );
        }
      } finally {
        for (const fn of cleanup.reverse()) await fn().catch(() => {});
      }
    });
  }

  private logSink(ctx: StepCtx, stream: 'stdout' | 'stderr'): Writable {
    // Collects the last lines of output for a failed step's error message, and forwards chunks.
    const emit = this.s.opts.emit;
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

  private async fromState(ref: string, inst: Instruction): Promise<ImageState> {
    const st = this.env.stageResult(ref);
    if (st) return st;
    try {
      const img = await this.s.image(ref);
      return { config: img.config, layers: img.layers, key: img.digest, args: new Map(), cmdSet: false };
    } catch (e) {
      throw this.fail(inst, `--from=${ref}: no stage or image of that name`, e instanceof TsbuildError ? e.hint : undefined, e);
    }
  }

  private async runMounts(inst: RunInstruction, cwd: string, cleanup: (() => Promise<void>)[], env: string[]): Promise<ExecMount[]> {
    const out: ExecMount[] = [];
    for (const m of inst.mounts) {
      const target = m.target ?? (m.type === 'secret' ? `/run/secrets/${m.id ?? ''}` : undefined);
      if (m.type === 'ssh') throw this.fail(inst, 'RUN --mount=type=ssh is not supported by tsbuild yet');
      if (target === undefined && m.type !== 'secret') throw this.fail(inst, `--mount=${m.spec}: target is required`);
      const abs = target === undefined ? undefined : posix.resolve(cwd, target);
      switch (m.type) {
        case 'tmpfs':
          out.push({ type: 'tmpfs', destination: abs as string, ...(m.size !== undefined ? { size: m.size } : {}) });
          break;
        case 'cache': {
          const id = m.id ?? (abs as string);
          const name = createHash('sha256').update(`${m.from ?? ''}\0${id}`).digest('hex').slice(0, 32);
          let dir = await this.s.cacheMountDir(name);
          // locked: one step at a time uses the cache; private: a step that finds it in use gets
          // a fresh throwaway one; shared (the default): everyone at once.
          if (m.sharing === 'locked' || m.sharing === 'private') {
            const held = await this.holdLock(`${dir}.lock`, m.sharing === 'locked' ? 3_600_000 : 0);
            if (held) cleanup.push(held);
            else {
              await mkdir(this.s.stateDir, { recursive: true });
              dir = await mkdtemp(join(this.s.stateDir, 'cache-private-'));
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
          let rootDir: string;
          if (m.from === undefined) {
            rootDir = (await this.env.context()).root;
          } else {
            const st = await this.fromState(m.from, inst);
            const parent = await this.s.ensureSnapshots(st.layers, diffIds(st));
            const view = await this.s.snapshots.prepare(parent);
            cleanup.push(() => view.release());
            rootDir = view.rootfs;
          }
          const src = resolveInRoot(rootDir, m.source ?? '/');
          if (!(await exists(src))) throw this.fail(inst, `--mount=${m.spec}: source "${m.source ?? '/'}" not found`);
          // A context bind is read-only: writes from the build must never reach the user's files.
          out.push({ type: 'bind', source: src, destination: abs as string, readonly: m.from === undefined ? true : m.readonly });
          break;
        }
        case 'secret': {
          const id = m.id ?? '';
          const spec = this.env.secrets[id];
          let value: Buffer | undefined;
          if (spec?.file !== undefined) value = await readFile(spec.file);
          else if (spec?.env !== undefined && process.env[spec.env] !== undefined) value = Buffer.from(process.env[spec.env] as string);
          if (value === undefined) {
            if (m.required) throw this.fail(inst, `secret "${id}" is required but was not provided`, `pass it with --secret id=${id},src=FILE`);
            break;
          }
          if (m.env !== undefined) env.push(`${m.env}=${value.toString('utf8')}`);
          if (abs !== undefined || m.env === undefined) {
            await mkdir(this.s.stateDir, { recursive: true });
            const dir = await mkdtemp(join(this.s.stateDir, 'secret-'));
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
  private async holdLock(file: string, timeoutMs: number): Promise<(() => Promise<void>) | undefined> {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let done!: Promise<unknown>;
    const acquired = await new Promise<boolean>((resolve) => {
      const lockOpts: { timeoutMs: number; signal?: AbortSignal } = { timeoutMs };
      if (this.s.opts.signal) lockOpts.signal = this.s.opts.signal;
      done = withLock(file, async () => {
        resolve(true);
        await held;
      }, lockOpts).catch(() => resolve(false));
    });
    if (!acquired) return undefined;
    return async () => {
      release();
      await done;
    };
  }

  private async copyStep(state: ImageState, raw: CopyInstruction | AddInstruction) {
    const { inst, used } = this.expand(state, raw);
    const c = containerConfig(state);
    const workdir = c.WorkingDir || '/';
    const from = inst.kind === 'copy' ? inst.from : undefined;
    let srcState: ImageState | undefined;
    if (from !== undefined) srcState = await this.fromState(from, inst);
    const urls = inst.kind === 'add' ? inst.sources.filter(isUrl) : [];
    const localSources = inst.sources.filter((s) => !isUrl(s));
    if (inst.kind === 'add' && inst.checksum !== undefined && urls.length === 0) {
      throw this.fail(inst, 'ADD --checksum can only be used with a URL source');
    }
    if (inst.sources.length === 0 && inst.heredocs.length === 0) throw this.fail(inst, `${inst.kind.toUpperCase()} requires at least one source`);

    // Identity of what is copied: content hashes of context sources, the source stage's layers, heredoc bodies, URLs.
    let sourceKey: unknown;
    if (srcState) sourceKey = ['stage', topChain(srcState) ?? 'scratch', localSources];
    else if (localSources.length > 0) {
      const bctx = await this.env.context();
      const matches = await this.resolve(bctx, localSources, inst);
      sourceKey = ['context', await hashSources(bctx, matches, { statCache: await this.s.statCache() })];
    } else sourceKey = ['none'];
    // A URL without --checksum may change on the server: like Docker, fetch it on every build and
    // key the step on what came back. With --checksum the checksum is the content's identity.
    const fetched = new Map<string, string>();
    let fetchDir: string | undefined;
    const urlKeys: unknown[] = [];
    try {
      for (const u of urls) {
        if (inst.kind === 'add' && inst.checksum !== undefined) {
          urlKeys.push([u, inst.checksum]);
          continue;
        }
        if (fetchDir === undefined) {
          await mkdir(this.s.stateDir, { recursive: true });
          fetchDir = await mkdtemp(join(this.s.stateDir, 'add-url-'));
        }
        const fopts: Parameters<typeof fetchUrl>[2] = {};
        if (this.s.opts.signal) fopts.signal = this.s.opts.signal;
        const got = await fetchUrl(u, await mkdtemp(join(fetchDir, 'u')), fopts);
        fetched.set(u, got);
        urlKeys.push([u, posixBase(got), createHash('sha256').update(await readFile(got)).digest('hex')]);
      }
      const flagsText = copyFlagsText(inst);
      const createdBy = `${inst.kind.toUpperCase()} ${flagsText}${[...inst.sources, ...inst.heredocs.map((h) => `<<${h.name}`)].join(' ')} ${inst.dest}`;
      const key = cacheKey([
        state.key, inst.kind, sourceKey, inst.heredocs.map((h) => [h.name, h.content]), urlKeys,
        inst.dest, workdir, inst.chown ?? '', inst.chmod ?? '', inst.parents, inst.exclude, inst.kind === 'add' ? [inst.checksum ?? '', inst.unpack ?? null] : [], used,
      ]);
      return await this.layerStep(state, key, createdBy, async (active) => {
        const chownOwner = inst.chown !== undefined ? await this.chownFor(inst.chown, state, active, inst.link) : undefined;
        const chmodSpec = inst.chmod !== undefined ? parseChmod(inst.chmod) : undefined;
        const copyOpts: Parameters<typeof copyInto>[4] = { workdir, parents: inst.parents };
        if (chownOwner) copyOpts.chown = chownOwner;
        if (chmodSpec) copyOpts.chmod = chmodSpec;
        if (this.s.opts.signal) copyOpts.signal = this.s.opts.signal;
        const cleanup: (() => Promise<void>)[] = [];
        try {
          // Heredocs and downloads are staged as files in a private dir and copied like context files.
          const staged: string[] = [];
          let stageDir: string | undefined;
          const stagingDir = async () => {
            if (!stageDir) {
              await mkdir(this.s.stateDir, { recursive: true });
              stageDir = await mkdtemp(join(this.s.stateDir, 'copy-'));
              const d = stageDir;
              cleanup.push(() => rm(d, { recursive: true, force: true }));
            }
            return stageDir;
          };
          for (const h of inst.heredocs) {
            const dir = await stagingDir();
            await writeFile(join(dir, h.name), h.content, { mode: 0o644 });
            staged.push(h.name);
          }
          for (const u of urls) {
            const dir = await stagingDir();
            const fopts: Parameters<typeof fetchUrl>[2] = {};
            if (inst.kind === 'add' && inst.checksum !== undefined) fopts.checksum = inst.checksum;
            if (this.s.opts.signal) fopts.signal = this.s.opts.signal;
            const pre = fetched.get(u);
            const got = pre !== undefined ? join(dir, posixBase(pre)) : await fetchUrl(u, dir, fopts);
            if (pre !== undefined) await copyFile(pre, got);
            staged.push(posixBase(got));
          }
          if (staged.length > 0 && stageDir) {
            const sctx = await BuildContext.open(stageDir, { ignore: NO_IGNORE });
            const matches = await sctx.resolveSources(staged);
            const destForStaged = inst.sources.length + inst.heredocs.length > 1 && !inst.dest.endsWith('/') ? `${inst.dest}/` : inst.dest;
            await copyInto(sctx, matches, active.rootfs, destForStaged, { ...copyOpts, parents: false });
          }
          if (localSources.length === 0) return;
          let bctx: BuildContext;
          if (srcState) {
            const parent = await this.s.ensureSnapshots(srcState.layers, diffIds(srcState));
            const view = await this.s.snapshots.prepare(parent);
            cleanup.push(() => view.release());
            bctx = await BuildContext.open(view.rootfs, { ignore: NO_IGNORE });
            copyOpts.keepOwnership = true;
          } else {
            bctx = await this.env.context();
          }
          const matches = await this.resolve(bctx, localSources, inst);
          if (inst.kind === 'add' && inst.unpack !== false) {
            const plain = [];
            for (const m of matches) {
              if (m.kind === 'file' && (await isArchive(m.realPath))) {
                const destDir = resolveInRoot(active.rootfs, posix.resolve(workdir, inst.dest.endsWith('/') ? inst.dest : posix.dirname(inst.dest) === '.' ? inst.dest : inst.dest));
                await mkdir(destDir, { recursive: true });
                await mkdir(this.s.stateDir, { recursive: true });
                const xopts: Parameters<typeof extractArchive>[2] = { tmpDir: this.s.stateDir };
                if (chownOwner) xopts.chown = chownOwner;
                if (this.s.opts.signal) xopts.signal = this.s.opts.signal;
                await extractArchive(m.realPath, destDir, xopts);
              } else plain.push(m);
            }
            if (plain.length > 0) await copyInto(bctx, plain, active.rootfs, inst.dest, copyOpts);
          } else {
            await copyInto(bctx, matches, active.rootfs, inst.dest, copyOpts);
          }
        } finally {
          for (const fn of cleanup.reverse()) await fn().catch(() => {});
        }
      }, { independent: inst.link });
    } finally {
      if (fetchDir !== undefined) await rm(fetchDir, { recursive: true, force: true });
    }
  }

  /** `--chown` names resolve through the image's passwd/group files, also for a --link layer. */
  private async chownFor(spec: string, state: ImageState, active: Active, link: boolean) {
    if (!link || /^\d+(:\d+)?$/.test(spec)) return resolveChown(spec, active.rootfs);
    const parent = await this.s.ensureSnapshots(state.layers, diffIds(state));
    const view = await this.s.snapshots.prepare(parent);
    try {
      return await resolveChown(spec, view.rootfs);
    } finally {
      await view.release();
    }
  }

  private async resolve(bctx: BuildContext, sources: string[], inst: CopyInstruction | AddInstruction) {
    try {
      return await bctx.resolveSources(sources, { excludes: inst.exclude, parents: inst.parents });
    } catch (e) {
      if (e instanceof SourceNotFoundError) {
        throw this.fail(inst, `${inst.kind.toUpperCase()} failed: ${e.message}`, e.hint, e);
      }
      throw e;
    }
  }

  /** Runs ONBUILD triggers of a base image, parsed as the instructions they were written as. */
  parseTriggers(triggers: readonly string[], from: Stage['from']): Instruction[] {
    const out: Instruction[] = [];
    for (const t of triggers) {
      try {
        const r = parse(t);
        for (const node of r.ast.children) out.push(parseInstruction(node, { file: `ONBUILD trigger of ${from.image}` }));
      } catch (e) {
        throw this.fail(from, `invalid ONBUILD trigger in base image: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return out;
  }
}

function isUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

function posixBase(p: string): string {
  return p.split('/').pop() ?? p;
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** Paths (mount targets and their parents) that the runtime will create as mountpoints. */
async function recordMountpoints(rootfs: string, targets: string[]): Promise<string[]> {
  const created: string[] = [];
  for (const t of targets) {
    const parts = posix.resolve('/', t).split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const p = resolveInRoot(rootfs, '/' + parts.slice(0, i).join('/'));
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

function summary(inst: Instruction): string {
  const first = inst.original.split('\n')[0] ?? '';
  return first.length > 120 ? first.slice(0, 119) + '…' : first;
}

function configKeyOf(inst: Instruction): unknown {
  const { range: _r, original: _o, ...rest } = inst as Instruction & Record<string, unknown>;
  return rest;
}

function copyFlagsText(inst: CopyInstruction | AddInstruction): string {
  const f: string[] = [];
  if (inst.kind === 'copy' && inst.from !== undefined) f.push(`--from=${inst.from}`);
  if (inst.chown !== undefined) f.push(`--chown=${inst.chown}`);
  if (inst.chmod !== undefined) f.push(`--chmod=${inst.chmod}`);
  if (inst.parents) f.push('--parents');
  if (inst.link) f.push('--link');
  for (const e of inst.exclude) f.push(`--exclude=${e}`);
  if (inst.kind === 'add' && inst.checksum !== undefined) f.push(`--checksum=${inst.checksum}`);
  return f.length > 0 ? `${f.join(' ')} ` : '';
}

function exposedPorts(inst: ExposeInstruction, fail: (m: string) => Error): string[] {
  const out: string[] = [];
  for (const spec of inst.ports) {
    const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(spec.trim());
    if (!m) throw fail(`EXPOSE: invalid port "${spec}": expected PORT[-PORT][/tcp|udp|sctp]`);
    const a = Number(m[1]);
    const b = m[2] !== undefined ? Number(m[2]) : a;
    const proto = (m[3] ?? 'tcp').toLowerCase();
    if (a < 0 || b > 65535 || b < a) throw fail(`EXPOSE: invalid port range "${spec}"`);
    for (let p = a; p <= b; p++) out.push(`${p}/${proto}`);
  }
  return out;
}

function applyHealthcheck(c: ReturnType<typeof containerConfig>, inst: HealthcheckInstruction): string {
  if (inst.test.type === 'none') {
    c.Healthcheck = { Test: ['NONE'] };
    return 'HEALTHCHECK NONE';
  }
  const cmd = inst.test.cmd;
  const test = cmd.form === 'exec' ? ['CMD', ...cmd.args] : ['CMD-SHELL', cmd.command];
  const h: NonNullable<typeof c.Healthcheck> = { Test: test };
  if (inst.interval !== undefined) h.Interval = inst.interval;
  if (inst.timeout !== undefined) h.Timeout = inst.timeout;
  if (inst.startPeriod !== undefined) h.StartPeriod = inst.startPeriod;
  if (inst.startInterval !== undefined) h.StartInterval = inst.startInterval;
  if (inst.retries !== undefined) h.Retries = inst.retries;
  c.Healthcheck = h;
  const opts = [
    inst.interval !== undefined ? `--interval=${formatDuration(inst.interval)}` : '',
    inst.timeout !== undefined ? `--timeout=${formatDuration(inst.timeout)}` : '',
    inst.startPeriod !== undefined ? `--start-period=${formatDuration(inst.startPeriod)}` : '',
    inst.retries !== undefined ? `--retries=${inst.retries}` : '',
  ].filter(Boolean);
  return `HEALTHCHECK ${opts.length ? opts.join(' ') + ' ' : ''}${test[0]} ${test.slice(1).join(' ')}`;
}

export type { Mount };
