/**
 * A private dockerd for Docker BuildKit: its own data-root, exec-root and socket, no bridge and
 * no iptables (nothing on the host network changes), stopped by its PID.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { DOCKER } from './paths.ts';
import { alive, have, removeTree, run, type RunOptions, type RunResult, sleepMs } from './proc.ts';

export class PrivateDockerd {
  private daemon: ChildProcess | undefined;
  /** DOCKER_HOST, DOCKER_BUILDKIT=1 and a private DOCKER_CONFIG for every client call. */
  readonly env: NodeJS.ProcessEnv;
  constructor(
    readonly dir: string,
    private readonly daemonLog: string,
    /** Registries (`127.0.0.1:PORT`) the daemon may reach over plain HTTP. */
    private readonly insecureRegistries: readonly string[] = [],
  ) {
    this.env = { ...process.env, DOCKER_HOST: `unix://${dir}/docker.sock`, DOCKER_BUILDKIT: '1', DOCKER_CONFIG: `${dir}/config` };
  }
  static available(): boolean {
    return have('dockerd') && existsSync(DOCKER);
  }
  get socket(): string {
    return `unix://${this.dir}/docker.sock`;
  }
  get running(): boolean {
    return this.daemon?.pid !== undefined && this.daemon.exitCode === null;
  }
  start(): void {
    removeTree(this.dir);
    mkdirSync(`${this.dir}/config`, { recursive: true });
    const out = openSync(this.daemonLog, 'a');
    this.daemon = spawn(
      'dockerd',
      [
        '--data-root', `${this.dir}/docker`, '--exec-root', `${this.dir}/exec`, '--pidfile', `${this.dir}/docker.pid`,
        '--host', `unix://${this.dir}/docker.sock`, '--storage-driver', 'overlay2', '--iptables=false', '--ip6tables=false',
        '--ip-masq=false', '--bridge=none', '--ip-forward=false',
        ...this.insecureRegistries.flatMap((r) => ['--insecure-registry', r]),
      ],
      { stdio: ['ignore', out, out], detached: true },
    );
    closeSync(out);
    for (let i = 0; i < 120; i++) {
      if (this.daemon.exitCode !== null) break;
      if (spawnSync(DOCKER, ['version'], { env: this.env, stdio: 'ignore' }).status === 0) return;
      sleepMs(500);
    }
    this.stop();
    throw new Error(`dockerd did not come up; see ${this.daemonLog}`);
  }
  /** Runs the docker client against this daemon. */
  docker(args: readonly string[], opts: RunOptions = {}): RunResult {
    return run(DOCKER, args, { ...opts, env: this.env });
  }
  version(): string {
    return `Docker ${this.docker(['version', '--format', '{{.Server.Version}}']).stdout.trim()} (built-in BuildKit)`;
  }
  /** SIGTERM, then SIGKILL after 30 s; the state directory goes too. */
  stop(): void {
    const d = this.daemon;
    this.daemon = undefined;
    if (d?.pid !== undefined && d.exitCode === null) {
      d.kill('SIGTERM');
      for (let i = 0; i < 60 && d.exitCode === null && d.signalCode === null && alive(d.pid); i++) sleepMs(500);
      if (alive(d.pid)) d.kill('SIGKILL');
    }
    removeTree(this.dir);
  }
}
