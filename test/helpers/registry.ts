import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** A docker-registry (distribution 2.8) process on a loopback port, with its own storage. */
export interface RunningRegistry {
  /** `http://127.0.0.1:PORT` (or the namespace's address) */
  url: string;
  /** `127.0.0.1:PORT`, the registry part of references. */
  host: string;
  pid: number;
  dir: string;
  stop(): Promise<void>;
}

export type RegistryAuth =
  | { htpasswd: { user: string; password: string } }
  | { token: { realm: string; service: string; issuer: string; certFile: string } };

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function yamlString(s: string): string {
  return JSON.stringify(s);
}

// If a test process dies without running its cleanups, its registries go with it.
const live = new Set<number>();
process.on('exit', () => {
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** Waits for the child to exit, killing it harder if it ignores SIGTERM. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  }, 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts a registry on 127.0.0.1, or inside a test network namespace (`netns`: a host that is not
 * loopback, so clients need --insecure-registry to use plain HTTP with it).
 */
export async function startRegistry(opts: { auth?: RegistryAuth; netns?: { name: string; ip: string } } = {}): Promise<RunningRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'tsbuild-registry-'));
  const port = opts.netns ? 5000 : await freePort();
  const ip = opts.netns?.ip ?? '127.0.0.1';
  const lines = [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${yamlString(join(dir, 'data'))}`,
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: ${ip}:${port}`,
  ];
  if (opts.auth && 'htpasswd' in opts.auth) {
    const { user, password } = opts.auth.htpasswd;
    const line = execFileSync('htpasswd', ['-Bbn', user, password], { encoding: 'utf8' }).trim();
    await writeFile(join(dir, 'htpasswd'), `${line}\n`);
    lines.push('auth:', '  htpasswd:', '    realm: tsbuild-test', `    path: ${yamlString(join(dir, 'htpasswd'))}`);
  } else if (opts.auth && 'token' in opts.auth) {
    const t = opts.auth.token;
    lines.push(
      'auth:',
      '  token:',
      `    realm: ${yamlString(t.realm)}`,
      `    service: ${yamlString(t.service)}`,
      `    issuer: ${yamlString(t.issuer)}`,
      `    rootcertbundle: ${yamlString(t.certFile)}`,
    );
  }
  const config = join(dir, 'config.yml');
  await writeFile(config, `${lines.join('\n')}\n`);
  const logFile = join(dir, 'registry.log');
  const fd = openSync(logFile, 'w');
  const argv = ['/usr/bin/docker-registry', 'serve', config];
  // `ip netns exec` execs the registry in place, so the pid is the registry's own.
  const child = opts.netns
    ? spawn('ip', ['netns', 'exec', opts.netns.name, ...argv], { stdio: ['ignore', fd, fd] })
    : spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const pid = child.pid;
  if (pid === undefined) throw new Error('docker-registry did not start');
  live.add(pid);
  child.once('exit', () => live.delete(pid));

  const url = `http://${ip}:${port}`;
  const stop = async (): Promise<void> => {
    await stopChild(child);
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      await stop();
      throw new Error(`docker-registry exited with ${child.exitCode}:\n${log}`);
    }
    try {
      const res = await fetch(`${url}/v2/`);
      if (res.status === 200 || res.status === 401) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error('docker-registry did not answer /v2/ within 20 s');
    }
    await sleep(50);
  }
  return { url, host: `${ip}:${port}`, pid, dir, stop };
}
