import { execFileSync } from 'node:child_process';

/**
 * A network namespace of the test's own, joined to the host by a veth pair: a host that is not
 * loopback (so registries there need --insecure-registry for plain HTTP), reachable only from
 * this machine. Removed by `destroy`.
 */
export interface TestNetns {
  name: string;
  /** The host's end of the veth pair. */
  hostIp: string;
  /** The namespace's address, where servers started inside it listen. */
  ip: string;
  destroy(): void;
}

let seq = 0;

export function createNetns(): TestNetns {
  const id = `${process.pid % 10000}${seq++}`;
  const name = `tsb-test-${id}`;
  const host = `tsbh${id}`;
  const peer = `tsbp${id}`;
  // A /30 out of 10.213.0.0/16 per namespace, different for each test process.
  const n = (process.pid * 7 + seq * 4) % 16000;
  const base = `10.213.${Math.floor((n * 4) / 256) % 256}.${(n * 4) % 256}`;
  const [a, b, c, d] = base.split('.').map(Number) as [number, number, number, number];
  const hostIp = `${a}.${b}.${c}.${d + 1}`;
  const ip = `${a}.${b}.${c}.${d + 2}`;
  const sh = (...args: string[]): void => {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  sh('netns', 'add', name);
  try {
    sh('link', 'add', host, 'type', 'veth', 'peer', 'name', peer);
    sh('link', 'set', peer, 'netns', name);
    sh('addr', 'add', `${hostIp}/30`, 'dev', host);
    sh('link', 'set', host, 'up');
    sh('-n', name, 'addr', 'add', `${ip}/30`, 'dev', peer);
    sh('-n', name, 'link', 'set', peer, 'up');
    sh('-n', name, 'link', 'set', 'lo', 'up');
  } catch (e) {
    destroy();
    throw e;
  }
  function destroy(): void {
    for (const args of [['link', 'del', host], ['netns', 'del', name]]) {
      try {
        sh(...args);
      } catch {
        // already gone
      }
    }
  }
  return { name, hostIp, ip, destroy };
}
