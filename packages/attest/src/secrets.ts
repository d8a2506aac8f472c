/**
 * Which build-arg names look like secrets. The words are those of BuildKit's SecretsUsedInArgOrEnv
 * check (apikey, auth, credential(s), key, password, pword, passwd, secret, token), plus their
 * plurals, and `public` anywhere in the name clears it as that check does (PUBLIC_KEY is fine).
 * BuildKit splits names only at `_`; here `-`, `.` and lower→upper camel-case steps split words
 * too, so `npmToken` and `api-key` are caught as well: a provenance document is published with the
 * image, and dropping one argument too many costs far less than publishing a token.
 */
const SECRET_WORDS = new Set([
  'apikey',
  'apikeys',
  'auth',
  'credential',
  'credentials',
  'key',
  'keys',
  'password',
  'passwords',
  'pword',
  'passwd',
  'passwds',
  'secret',
  'secrets',
  'token',
  'tokens',
]);

function words(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .split(/[_.\-]+/)
    .filter((w) => w !== '');
}

/** True when a build-arg (or env) name looks like it holds a secret. */
export function isSecretName(name: string): boolean {
  const ws = words(name);
  if (ws.includes('public')) return false;
  return ws.some((w) => SECRET_WORDS.has(w));
}
