/**
 * The instructions that only change the image config (ENV, LABEL, ARG, USER, CMD, …): no
 * filesystem, an `empty_layer` history entry, and a key of the expanded instruction plus the
 * values it read.
 */
import { formatDuration } from '@tsbuild/dockerfile';
import type { ArgInstruction, ExposeInstruction, HealthcheckInstruction, Instruction } from '@tsbuild/dockerfile';
import type { ContainerConfig } from '@tsbuild/oci';
import { cacheKey } from '../cache.ts';
import { commandArgs, goQuoteList } from '../history.ts';
import { addHistory, cloneState, containerConfig, setEnv, shellOf } from '../state.ts';
import type { ImageState } from '../state.ts';
import type { StepCtx, StepKit, StepResult } from './kit.ts';
import { span } from '../trace.ts';

export async function configStep(kit: StepKit, state: ImageState, raw: Instruction, ctx?: StepCtx): Promise<StepResult> {
  const next = cloneState(state);
  let createdBy: string;
  let keyParts: unknown[];
  if (raw.kind === 'arg') {
    createdBy = declareArgs(kit, next, raw);
    // Declaring an ARG is not a cache boundary: only steps that read its value depend on it.
    keyParts = ['arg', raw.args.map((a) => a.key)];
  } else {
    const { inst, used } = kit.expand(next, raw);
    keyParts = [inst.kind, configKeyOf(inst), used];
    if (ctx) ctx.inputs = { values: Object.fromEntries(used) };
    createdBy = applyConfig(kit, next, inst);
  }
  next.key = cacheKey([state.key, ...keyParts]);
  const rec = await span('cache.lookup', () => kit.configRecord(next.key));
  addHistory(next, { created: rec.created, created_by: createdBy, comment: 'tsbuild', empty_layer: true });
  kit.journal(state, next, { v: 1, created: rec.created });
  return { state: next, cached: rec.cached };
}

/** ARG: a --build-arg value wins over the default, which wins over the global ARG of that name. */
function declareArgs(kit: StepKit, next: ImageState, raw: ArgInstruction): string {
  const names: string[] = [];
  for (const a of raw.args) {
    let value: string | undefined;
    if (Object.hasOwn(kit.env.buildArgs, a.key)) {
      value = kit.env.buildArgs[a.key];
      kit.env.consumed.add(a.key);
    } else if (a.value !== undefined) {
      value = kit.expand(next, { ...raw, args: [{ key: a.key, value: a.value }] }).inst.args[0]?.value ?? '';
    } else if (kit.env.globalArgs.has(a.key)) {
      value = kit.env.globalArgs.get(a.key);
    }
    if (value !== undefined) next.args.set(a.key, value);
    else next.args.delete(a.key);
    names.push(value !== undefined ? `${a.key}=${value}` : a.key);
  }
  return `ARG ${names.join(' ')}`;
}

/** The instruction's own fields, without where it was written. */
function configKeyOf(inst: Instruction): unknown {
  const { range: _r, original: _o, ...rest } = inst as Instruction & Record<string, unknown>;
  return rest;
}

/** Applies one expanded config instruction; returns its history `created_by`. */
function applyConfig(kit: StepKit, next: ImageState, inst: Instruction): string {
  const c = containerConfig(next);
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
      const ports = exposedPorts(inst, (m) => kit.fail(inst, m));
      for (const p of ports) c.ExposedPorts[p] = {};
      return `EXPOSE ${ports.join(' ')}`;
    }
    case 'volume':
      c.Volumes = { ...(c.Volumes ?? {}) };
      for (const v of inst.volumes) {
        if (v.trim() === '') throw kit.fail(inst, 'VOLUME specified can not be an empty string');
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
      throw kit.fail(inst, `${inst.kind.toUpperCase()} is not a configuration instruction`);
  }
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

function applyHealthcheck(c: ContainerConfig, inst: HealthcheckInstruction): string {
  if (inst.test.type === 'none') {
    c.Healthcheck = { Test: ['NONE'] };
    return 'HEALTHCHECK NONE';
  }
  const cmd = inst.test.cmd;
  const test = cmd.form === 'exec' ? ['CMD', ...cmd.args] : ['CMD-SHELL', cmd.command];
  const h: NonNullable<ContainerConfig['Healthcheck']> = { Test: test };
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
