import { UsageError } from '@tsbuild/errors';
import { login as storeLogin } from '@tsbuild/registry';
import type { Command } from '../command.ts';
import { readStdin } from './check.ts';
import { registryOptions, withRegistryFlags } from './common.ts';

export const login: Command = {
  command: 'login <server>',
  describe: 'Log in to a registry (stored in the Docker config.json)',
  builder: (y) =>
    withRegistryFlags(
      y
        .positional('server', { type: 'string' })
        .option('username', { alias: 'u', type: 'string' })
        .option('password', { alias: 'p', type: 'string' })
        .option('password-stdin', { type: 'boolean' }),
    ),
  handler: async (args) => {
    const user = typeof args.username === 'string' ? args.username : undefined;
    let password = typeof args.password === 'string' ? args.password : undefined;
    if (args['password-stdin']) password = (await readStdin()).replace(/\r?\n$/, '');
    if (!user || password === undefined) throw new UsageError('login needs --username and --password or --password-stdin');
    await storeLogin(String(args.server), user, password, registryOptions(args));
    process.stdout.write('Login Succeeded\n');
  },
};
