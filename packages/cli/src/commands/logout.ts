import { logout as removeLogin } from '@tsbuild/registry';
import type { Command } from '../command.ts';

export const logout: Command = {
  command: 'logout <server>',
  describe: 'Remove stored credentials for a registry',
  builder: (y) => y.positional('server', { type: 'string' }),
  handler: async (args) => {
    const removed = await removeLogin(String(args.server));
    process.stdout.write(removed ? `Removing login credentials for ${String(args.server)}\n` : `Not logged in to ${String(args.server)}\n`);
  },
};
