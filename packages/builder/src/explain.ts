/**
 * Why a step missed the cache: the builder keeps, for each tag and target, the inputs of every
 * step of the last build (instruction, the build args and environment values it read, the files
 * it copied, its parent), and compares a step that runs with the same step of that build.
 */
import { createHash } from 'node:crypto';
import type { Digest } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';

/** What a step read, as far as its result depends on it (a step fills this in as it computes its key). */
export interface StepInputs {
  /** Build args and environment values the step read, by name. */
  values?: Record<string, string>;
  /** COPY/ADD: each source entry (context-relative path) → its type, mode and content hash. */
  files?: Map<string, string>;
}

/** Why a step ran, for progress lines, rawjson and the Action's summary. */
export interface MissReason {
  /** One line, e.g. `files changed: a.txt, b.txt (+3 more)`. */
  reason: string;
  files?: { changed: string[]; added: string[]; removed: string[] };
  /** Names of the build args or environment values whose value changed. */
  values?: string[];
}

interface StoredStep {
  key: string;
  parent: string;
  instruction: string;
  values?: Record<string, string>;
  /** A blob in the store: the sorted [path, fingerprint] list of the files the step copied. */
  files?: Digest;
}

interface StoredBuild {
  v: 1;
  steps: Record<string, StoredStep>;
}

const NS = 'build-inputs';
const FILES_MEDIA_TYPE = 'application/vnd.tsbuild.step-files.v1+json';
/** Names shown per kind of change; the rest is counted. */
const SHOWN = 5;

/** Which earlier build a build is compared with: the same tag and target, else the same context and Dockerfile. */
export function buildIdentity(tags: readonly string[], target: string | undefined, contextDir: string, file: string): string[] {
  const ids = tags.length > 0 ? tags.map((t) => `tag:${t}`) : [`context:${contextDir}\0${file}`];
  return ids.map((id) => createHash('sha256').update(`${id}\0target:${target ?? ''}`).digest('hex'));
}

export class MissExplainer {
  private previous: StoredBuild | undefined;
  private readonly current: StoredBuild = { v: 1, steps: {} };
  private readonly blobs: Digest[] = [];
  private loaded: Promise<void> | undefined;

  constructor(
    private readonly store: Store,
    private readonly ids: readonly string[],
  ) {}

  private load(): Promise<void> {
    return (this.loaded ??= (async () => {
      const v = (await this.store.meta(NS, { durable: false }).get(this.ids[0] as string)) as StoredBuild | undefined;
      this.previous = v && v.v === 1 && typeof v.steps === 'object' ? v : undefined;
    })());
  }

  /**
   * Records a step of this build and, when it ran (a miss), says why by comparing it with the
   * same step (by stage and position) of the last build of the same tag and target.
   */
  async step(position: string, r: { key: string; parent: string; instruction: string; inputs: StepInputs | undefined; cached: boolean; noCache: boolean }): Promise<MissReason | undefined> {
    await this.load();
    const prev = this.previous?.steps[position];
    const stored: StoredStep = { key: r.key, parent: r.parent, instruction: r.instruction };
    if (r.inputs?.values && Object.keys(r.inputs.values).length > 0) stored.values = r.inputs.values;
    if (r.inputs?.files && r.inputs.files.size > 0) {
      // Unchanged files need no new list: the last build's blob says the same.
      if (prev?.files && prev.key === r.key) stored.files = prev.files;
      else stored.files = await this.storeFiles(r.inputs.files);
      this.blobs.push(stored.files);
    }
    this.current.steps[position] = stored;
    if (r.cached) return undefined;
    if (r.noCache) return { reason: '--no-cache' };
    if (!prev) return undefined;
    if (prev.key === r.key) return { reason: 'its cached result was gone (pruned, or its layer missing)' };
    if (prev.parent !== r.parent) {
      return { reason: position.endsWith('/2') ? 'the base image changed' : 'the step before it changed' };
    }
    if (prev.instruction !== r.instruction) return { reason: 'the instruction changed' };
    const changedValues = [...new Set([...Object.keys(prev.values ?? {}), ...Object.keys(stored.values ?? {})])]
      .filter((k) => prev.values?.[k] !== stored.values?.[k])
      .sort();
    if (changedValues.length > 0) return { reason: `${changedValues.length === 1 ? 'value' : 'values'} changed: ${shown(changedValues)}`, values: changedValues };
    if (stored.files && prev.files) {
      const files = await this.diffFiles(prev.files, r.inputs?.files ?? new Map());
      if (files) {
        const parts: string[] = [];
        if (files.changed.length > 0) parts.push(`changed ${shown(files.changed)}`);
        if (files.added.length > 0) parts.push(`added ${shown(files.added)}`);
        if (files.removed.length > 0) parts.push(`removed ${shown(files.removed)}`);
        return { reason: `files ${parts.join('; ')}`, files };
      }
    }
    return { reason: 'its inputs changed' };
  }

  /** Keeps this build's inputs for the next build of the same tags and target. */
  async save(): Promise<void> {
    const meta = this.store.meta(NS, { durable: false });
    for (const id of this.ids) await meta.set(id, this.current, { roots: [...new Set(this.blobs)] });
  }

  private async storeFiles(files: Map<string, string>): Promise<Digest> {
    const list = [...files].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return (await this.store.putJson(FILES_MEDIA_TYPE, list)).digest;
  }

  private async diffFiles(prevBlob: Digest, now: Map<string, string>): Promise<MissReason['files']> {
    let prev: [string, string][];
    try {
      prev = JSON.parse((await this.store.readBlob(prevBlob, { maxSize: 256 * 1024 * 1024 })).toString('utf8')) as [string, string][];
      if (!Array.isArray(prev)) return undefined;
    } catch {
      return undefined;
    }
    const before = new Map(prev);
    const changed: string[] = [];
    const added: string[] = [];
    for (const [p, fp] of now) {
      const was = before.get(p);
      if (was === undefined) added.push(p);
      else if (was !== fp) changed.push(p);
    }
    const removed = prev.map(([p]) => p).filter((p) => !now.has(p));
    if (changed.length + added.length + removed.length === 0) return undefined;
    return { changed: changed.sort(), added: added.sort(), removed: removed.sort() };
  }
}

function shown(names: string[]): string {
  const head = names.slice(0, SHOWN).join(', ');
  return names.length > SHOWN ? `${head} (+${names.length - SHOWN} more)` : head;
}

