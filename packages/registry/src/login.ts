import { RegistryClient, type ClientOptions } from './client.ts';
import { removeCredentials, storeCredentials, type DockerConfigOptions } from './credentials.ts';

export interface LoginOptions extends ClientOptions, DockerConfigOptions {
  signal?: AbortSignal | undefined;
}

/**
 * `docker login`: the registry must accept the credentials before they are saved (into the
 * configured credential helper, else config.json with mode 0600).
 */
export async function login(registry: string, username: string, password: string, opts: LoginOptions = {}): Promise<void> {
  const client = new RegistryClient({ ...opts, credentials: async () => ({ username, password }) });
  try {
    await client.verifyCredentials(registry, opts.signal);
  } finally {
    client.close();
  }
  await storeCredentials(registry, username, password, opts);
}

/** `docker logout`: true when credentials were removed. */
export async function logout(registry: string, opts: DockerConfigOptions = {}): Promise<boolean> {
  return removeCredentials(registry, opts);
}
