import type { MissReason } from './explain.ts';

/**
 * Progress events a build emits. The CLI renders them (tty, plain, rawjson); the builder never
 * prints. Every step of every stage gets an id; logs are a step's RUN output.
 */
export type BuildEvent =
  | { type: 'build-start'; time: number; stages: number; steps: number }
  | {
      type: 'step-start';
      time: number;
      id: string;
      /** e.g. `[build 2/5] RUN make` */
      name: string;
      stage: string;
      index: number;
      total: number;
    }
  | { type: 'step-log'; time: number; id: string; stream: 'stdout' | 'stderr'; data: string }
  | {
      type: 'step-done';
      time: number;
      id: string;
      cached: boolean;
      durationMs: number;
      /** Uncompressed layer size in bytes when the step made a layer. */
      layerSize?: number;
      /** Why a step that ran missed the cache, compared with the last build of the same tag and target. */
      miss?: MissReason;
      /** CPU seconds and peak memory of a RUN step's processes, read from its cgroup (v1 or v2). */
      usage?: { cpu_seconds: number; memory_peak_bytes?: number };
    }
  | { type: 'step-error'; time: number; id: string; message: string }
  | { type: 'build-done'; time: number; imageDigest: string; configDigest: string; durationMs: number }
  /** Outputs, after the build: an archive or directory written, a blob and a name pushed. */
  | { type: 'exported'; time: number; output: string; dest: string; size: number }
  | { type: 'push-blob'; time: number; ref: string; digest: string; status: string }
  | { type: 'pushed'; time: number; ref: string; digest: string }
  /** Attestations pushed as a referrer of a pushed manifest (`subject`). */
  | { type: 'attested'; time: number; ref: string; digest: string; subject: string; via: 'referrers-api' | 'fallback-tag' }
  /** Something the build left alone and went on without (an unreadable cache, an oversized cache mount). */
  | { type: 'warning'; time: number; message: string }
  /** A cache mount filled from a remote cache before its first use. */
  | { type: 'cache-mount-restored'; time: number; id: string; source: string; size: number }
  /** The cache written to a --cache-to. */
  | { type: 'cache-exported'; time: number; target: string; records: number; mounts: number; uploaded: number; skipped: number };

export type EventSink = (e: BuildEvent) => void;

/** `cpu 0.9s  peak 34 MiB`: what a RUN step cost, as progress lines and summaries show it. */
export function usageText(u: { cpu_seconds: number; memory_peak_bytes?: number } | undefined): string {
  if (!u) return '';
  const cpu = `cpu ${u.cpu_seconds.toFixed(1)}s`;
  return u.memory_peak_bytes === undefined ? cpu : `${cpu}  peak ${(u.memory_peak_bytes / 1024 / 1024).toFixed(0)} MiB`;
}
