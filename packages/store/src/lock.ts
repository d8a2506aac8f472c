import { open, readFile, rm, stat } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { TsbuildError } from '@tsbuild/errors';
import { errnoCode } from './fsutil.ts';

export interface LockOptions {
  signal?: AbortSignal;
  /** Give up after this long (default 120 s) with a TsbuildError naming the holder. */
  timeoutMs?: number;
}

/** A lock file that is empty or unreadable this long after creation belongs to a dead writer. */
const EMPTY_LOCK_STALE_MS = 10_000;

function readBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '-';
  }
}

/** Start time of a process in clock ticks since boot: tells a live holder from a reused pid. */
function startTime(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}

const BOOT_ID = readBootId();
const OWNER = `${process.pid} ${startTime(process.pid) ?? '-'} ${BOOT_ID}\n`;

function holderAlive(content: string): boolean | undefined {
  const [pidText, start, boot] = content.trim().split(' ');
  const pid = Number(pidText);
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  if (boot !== undefined && boot !== '-' && BOOT_ID !== '-' && boot !== BOOT_ID) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (errnoCode(e) === 'ESRCH') return false;
  }
  if (start !== undefined && start !== '-') {
    const now = startTime(pid);
    if (now !== undefined && now !== start) return false;
  }
  return true;
}

async function readHolder(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
}

async function ageMs(file: string): Promise<number | undefined> {
  try {
    return Date.now() - (await stat(file)).mtimeMs;
  } catch {
    return undefined;
  }
}

async function tryCreate(file: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(file, 'wx', 0o644);
  } catch (e) {
    if (errnoCode(e) === 'EEXIST') return false;
    throw e;
  }
  try {
    await fh.writeFile(OWNER);
  } finally {
    await fh.close();
  }
  return true;
}

/**
 * Removes the lock if its holder is dead. Breaking goes through a second lock file so that two
 * waiters who both saw the same dead holder cannot remove a lock a third process just took.
 */
async function breakIfStale(file: string, seen: string): Promise<boolean> {
  const alive = holderAlive(seen);
  if (alive === true) return false;
  if (alive === undefined && ((await ageMs(file)) ?? 0) < EMPTY_LOCK_STALE_MS) return false;
  const breaker = `${file}.break`;
  if (!(await tryCreate(breaker))) {
    if (((await ageMs(breaker)) ?? 0) > EMPTY_LOCK_STALE_MS) await rm(breaker, { force: true });
    return false;
  }
  try {
    if ((await readHolder(file)) === seen) await rm(file, { force: true });
  } finally {
    await rm(breaker, { force: true });
  }
  return true;
}

const queues = new Map<string, Promise<void>>();

/**
 * Runs `fn` holding an exclusive lock shared by every tsbuild process using the same file:
 * `open(wx)` with the holder's pid inside, stale locks of dead holders broken, retries with
 * backoff. Callers in the same process queue up in memory instead of polling the file.
 */
export async function withLock<T>(file: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const prev = queues.get(file) ?? Promise.resolve();
  let done!: () => void;
  const mine = new Promise<void>((r) => (done = r));
  const tail = prev.then(() => mine);
  queues.set(file, tail);
  try {
    await prev;
    await acquire(file, opts);
    try {
      return await fn();
    } finally {
      await rm(file, { force: true });
    }
  } finally {
    done();
    if (queues.get(file) === tail) queues.delete(file);
  }
}

async function acquire(file: string, opts: LockOptions): Promise<void> {
  const timeout = opts.timeoutMs ?? 120_000;
  const start = Date.now();
  let delay = 2;
  for (;;) {
    opts.signal?.throwIfAborted();
    if (await tryCreate(file)) return;
    const seen = await readHolder(file);
    if (seen === undefined) continue;
    if (await breakIfStale(file, seen)) continue;
    if (Date.now() - start > timeout) {
      const pid = seen.trim().split(' ')[0] || 'unknown';
      throw new TsbuildError('LOCK_TIMEOUT', `timed out after ${Math.round(timeout / 1000)} s waiting for lock ${file} held by pid ${pid}`, {
        hint: `if no tsbuild process with pid ${pid} is running, remove ${file}`,
      });
    }
    await sleep(delay * (0.5 + Math.random()), undefined, { signal: opts.signal });
    delay = Math.min(delay * 2, 100);
  }
}
