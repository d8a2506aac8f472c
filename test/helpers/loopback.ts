import type { Server } from 'node:http';
import type { Socket } from 'node:net';

export interface Listening {
  port: number;
  /** `http://127.0.0.1:PORT` */
  origin: string;
  /** Drops every open connection (a stalled or kept-alive one too) and closes the server. */
  stop(): Promise<void>;
}

/** Starts `server` on a free port of 127.0.0.1: the test servers never listen anywhere else. */
export async function listenOnLoopback(server: Server): Promise<Listening> {
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
