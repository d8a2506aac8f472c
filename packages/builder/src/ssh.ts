/**
 * SSH agents for RUN --mount=type=ssh. A step never sees the agent `--ssh` named: it gets a
 * socket of its own (mode, uid and gid as the mount asks) whose connections are forwarded to that
 * agent, as BuildKit forwards them through its session. Key files are loaded into an ssh-agent
 * that tsbuild starts for the step and stops after it, so a key is read by ssh-add alone and
 * never lands in a layer, a cache key or tsbuild's memory.
 */
import type { ChildProcess } from 'node:child_process';
import type * as ChildProcesses from 'node:child_process';
import { chmod, chown, lstat, mkdtemp, rm, stat } from 'node:fs/promises';
import type { Server, Socket } from 'node:net';
import type * as Net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TsbuildError, UsageError } from '@tsbuild/errors';

/** Loaded on first use: only a build with --ssh needs sockets and an agent. */
const childProcess = (): typeof ChildProcesses => process.getBuiltinModule('node:child_process');
const net = (): typeof Net => process.getBuiltinModule('node:net');

export interface AgentSocketOptions {
  uid: number;
  gid: number;
  /** Mode of the step's socket (default 0600). */
  mode: number;
}

export interface AgentSocket {
  /** Host path of the step's socket, to bind-mount into the container. */
  path: string;
  close(): Promise<void>;
}

/** Starts forwarding a step's socket to the agent of `--ssh ID=PATHS` (a socket, or key files). */
export async function agentSocket(id: string, paths: readonly string[], opts: AgentSocketOptions): Promise<AgentSocket> {
  const kinds = await Promise.all(paths.map(async (p) => {
    try {
      const st = await stat(p);
      return st.isSocket() ? 'socket' : st.isFile() ? 'file' : 'other';
    } catch {
      throw new UsageError(`--ssh ${id}: ${p} does not exist`, { hint: 'name an agent socket ($SSH_AUTH_SOCK) or private key files' });
    }
  }));
  if (kinds.includes('socket') && paths.length > 1) throw new UsageError(`--ssh ${id}: an agent socket cannot be combined with other paths`);
  const bad = paths.find((_, i) => kinds[i] === 'other');
  if (bad !== undefined) throw new UsageError(`--ssh ${id}: ${bad} is neither an agent socket nor a key file`);

  // Socket paths are limited to 108 bytes: keep them short, in a private directory.
  const dir = await mkdtemp(join(tmpdir(), 'tsbuild-ssh-'));
  let agent: ChildProcess | undefined;
  let server: Server | undefined;
  const conns = new Set<Socket>();
  const close = async (): Promise<void> => {
    for (const c of conns) c.destroy();
    if (server) await new Promise<void>((r) => server!.close(() => r()));
    if (agent && agent.exitCode === null && agent.signalCode === null) {
      const exited = new Promise<void>((r) => agent!.once('exit', () => r()));
      agent.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    let upstream = paths[0] as string;
    if (kinds[0] !== 'socket') {
      upstream = join(dir, 'agent');
      agent = await startAgent(id, upstream);
      await addKeys(id, upstream, paths);
    }
    const path = join(dir, 'sock');
    server = net().createServer((c) => {
      conns.add(c);
      const u = net().connect(upstream);
      conns.add(u);
      const end = () => {
        c.destroy();
        u.destroy();
        conns.delete(c);
        conns.delete(u);
      };
      c.on('error', end).on('close', end);
      u.on('error', end).on('close', end);
      c.pipe(u).pipe(c);
    });
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(path, () => resolve());
    });
    await chmod(path, opts.mode);
    await chown(path, opts.uid, opts.gid);
    return { path, close };
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }
}

function spawnError(id: string, e: NodeJS.ErrnoException, program: string): TsbuildError {
  if (e.code === 'ENOENT') {
    return new UsageError(`--ssh ${id}: key files need ${program}, which is not installed`, { hint: 'install openssh-client, or pass an agent socket instead of key files' });
  }
  return new TsbuildError('SSH_AGENT', `--ssh ${id}: cannot run ${program}: ${e.message}`, { cause: e });
}

/** An ssh-agent in the foreground (-D) on `sock`, ready once the socket exists. */
async function startAgent(id: string, sock: string): Promise<ChildProcess> {
  const child = childProcess().spawn('ssh-agent', ['-D', '-a', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (e) => reject(spawnError(id, e, 'ssh-agent')));
    child.once('exit', (code) => reject(new TsbuildError('SSH_AGENT', `--ssh ${id}: ssh-agent exited (${code}): ${stderr.trim()}`)));
  });
  failed.catch(() => {});
  const ready = (async () => {
    for (let i = 0; i < 200; i++) {
      try {
        if ((await lstat(sock)).isSocket()) return;
      } catch {
        // not there yet
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new TsbuildError('SSH_AGENT', `--ssh ${id}: ssh-agent did not open its socket`);
  })();
  try {
    await Promise.race([ready, failed]);
  } catch (e) {
    child.kill('SIGTERM');
    throw e;
  }
  return child;
}

/**
 * `ssh-add` of the key files, in a session of its own: with no terminal and no askpass it cannot
 * ask for a passphrase, so a protected key fails with ssh-add's message instead of hanging.
 */
async function addKeys(id: string, sock: string, keys: readonly string[]): Promise<void> {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', SSH_AUTH_SOCK: sock, SSH_ASKPASS_REQUIRE: 'never' };
  const child = childProcess().spawn('ssh-add', ['-q', ...keys], { stdio: ['ignore', 'ignore', 'pipe'], env, detached: true });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', (e) => reject(spawnError(id, e, 'ssh-add')));
    child.once('close', (c) => resolve(c));
  });
  if (code !== 0) {
    throw new UsageError(`--ssh ${id}: cannot load ${keys.join(', ')}: ${stderr.trim() || `ssh-add exited with ${code}`}`, {
      hint: 'a key with a passphrase must be added to an agent first (ssh-add KEY), then passed as --ssh ID=$SSH_AUTH_SOCK',
    });
  }
}
