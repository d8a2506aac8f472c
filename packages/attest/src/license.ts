/**
 * Declared licenses as SPDX license expressions. What a package declares is often not SPDX
 * (`GPL-2+`, `BSD License`, `SEE LICENSE IN LICENSE.md`); such names become `LicenseRef-` ids,
 * with the text as found kept so the SPDX document can define them (hasExtractedLicensingInfos).
 */
import { createHash } from 'node:crypto';
import parseSpdx from 'spdx-expression-parse';

export interface DeclaredLicense {
  /** A valid SPDX license expression; any `LicenseRef-` in it is defined in `refs`. */
  expression: string;
  /** LicenseRef id → the license name or text as the package declared it. */
  refs: Record<string, string>;
}

// Longer than any license name a package declares; keeps a hostile value from costing much to parse.
const MAX_LICENSE_CHARS = 512;
const MAX_EXPRESSION_CHARS = 64 * 1024;

export function isSpdxExpression(s: string): boolean {
  if (s.length === 0 || s.length > MAX_EXPRESSION_CHARS) return false;
  try {
    parseSpdx(s);
    return true;
  } catch {
    return false;
  }
}

/**
 * A `LicenseRef-` id for a name: the name itself when it is already a valid id, else its letters,
 * digits, `.` and `-` with a short hash of the original, so two spellings never share an id.
 */
export function licenseRefId(text: string): string {
  const clean = text.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 64);
  if (clean === text && clean !== '') return `LicenseRef-${clean}`;
  const h = createHash('sha256').update(text).digest('hex').slice(0, 8);
  return clean === '' ? `LicenseRef-${h}` : `LicenseRef-${clean}-${h}`;
}

// SPDX ids in the case they are registered, for names packages write in another case (`mit`, `apache-2.0`).
const CANONICAL_IDS = [
  '0BSD', 'AFL-2.1', 'AGPL-3.0-only', 'AGPL-3.0-or-later', 'Apache-1.1', 'Apache-2.0', 'Artistic-1.0', 'Artistic-1.0-Perl',
  'Artistic-2.0', 'BlueOak-1.0.0', 'BSD-1-Clause', 'BSD-2-Clause', 'BSD-3-Clause', 'BSD-4-Clause', 'BSL-1.0', 'bzip2-1.0.6',
  'CC-BY-3.0', 'CC-BY-4.0', 'CC-BY-SA-3.0', 'CC-BY-SA-4.0', 'CC0-1.0', 'CDDL-1.0', 'CDDL-1.1', 'curl', 'EPL-1.0', 'EPL-2.0',
  'GFDL-1.2-only', 'GFDL-1.2-or-later', 'GFDL-1.3-only', 'GFDL-1.3-or-later', 'GPL-1.0-only', 'GPL-1.0-or-later',
  'GPL-2.0-only', 'GPL-2.0-or-later', 'GPL-3.0-only', 'GPL-3.0-or-later', 'HPND', 'ICU', 'IJG', 'ISC', 'LGPL-2.0-only',
  'LGPL-2.0-or-later', 'LGPL-2.1-only', 'LGPL-2.1-or-later', 'LGPL-3.0-only', 'LGPL-3.0-or-later', 'Libpng', 'libtiff',
  'MIT', 'MIT-0', 'MPL-1.1', 'MPL-2.0', 'NCSA', 'OFL-1.1', 'OpenSSL', 'PostgreSQL', 'PSF-2.0', 'Python-2.0', 'Ruby',
  'Sleepycat', 'Unicode-3.0', 'Unicode-DFS-2016', 'Unlicense', 'UPL-1.0', 'Vim', 'W3C', 'WTFPL', 'X11', 'Zlib', 'ZPL-2.1',
];
const BY_LOWER = new Map(CANONICAL_IDS.map((id) => [id.toLowerCase(), id]));

/** One license name (no operators) → an SPDX id, or undefined when it is not one. */
function spdxId(name: string): string | undefined {
  const canonical = BY_LOWER.get(name.toLowerCase()) ?? name;
  return /^[A-Za-z0-9.+-]+$/.test(canonical) && isSpdxExpression(canonical) ? canonical : undefined;
}

/**
 * A license string from package metadata (npm `license`, apk `L:`, Python `License`): kept when it
 * is an SPDX expression (or one id in another case), else one LicenseRef for the whole string.
 * Multi-line or very long values are license texts, not names: unknown.
 */
export function declaredLicense(raw: string | undefined): DeclaredLicense | undefined {
  const s = raw?.trim();
  if (!s || s.length > MAX_LICENSE_CHARS || /^(unknown|none|noassertion|unlicensed)$/i.test(s)) return undefined;
  if (isSpdxExpression(s)) return { expression: s, refs: {} };
  const id = spdxId(s);
  if (id !== undefined) return { expression: id, refs: {} };
  if (s.includes('\n') || s.length > 100) return undefined;
  const ref = licenseRefId(s);
  return { expression: ref, refs: { [ref]: s } };
}

/**
 * A Debian short license name (DEP-5 §Short names: `GPL-2+`, `Expat`, `BSD-3-clause`, …) → an
 * SPDX id where the two mean the same thing; anything else becomes a LicenseRef.
 */
function dep5Name(name: string, refs: Record<string, string>): string {
  const n = name.trim();
  if (/^expat$/i.test(n)) return 'MIT';
  const bsd = /^bsd-([1-4])-clause$/i.exec(n);
  if (bsd) return `BSD-${bsd[1]}-Clause`;
  const gnu = /^(a?gpl|lgpl|gfdl)-?(\d+(?:\.\d+)?)(\+)?$/i.exec(n);
  if (gnu) {
    const family = gnu[1]!.toUpperCase();
    const version = gnu[2]!.includes('.') ? gnu[2]! : `${gnu[2]}.0`;
    const candidate = `${family}-${version}-${gnu[3] ? 'or-later' : 'only'}`;
    const id = spdxId(candidate);
    if (id !== undefined) return id;
  }
  const id = spdxId(n);
  if (id !== undefined && !id.endsWith('+')) return id;
  const ref = licenseRefId(n);
  refs[ref] = n;
  return ref;
}

/**
 * The `License:` field of a machine-readable Debian copyright file (its first line, the short
 * names) → an SPDX expression. DEP-5: `and` binds tighter than `or`, and a comma before either
 * ends a group (`A or B, and C` is `(A OR B) AND C`).
 */
export function dep5License(field: string, refs: Record<string, string>): string | undefined {
  const line = field.split('\n')[0]!.trim();
  if (line === '' || line.length > MAX_LICENSE_CHARS) return undefined;
  const groups = line.split(/\s*,\s*(?=(?:and|or)\s)/i);
  let expr = '';
  for (let i = 0; i < groups.length; i++) {
    let g = groups[i]!;
    let op = '';
    if (i > 0) {
      const m = /^(and|or)\s+/i.exec(g)!;
      op = m[1]!.toUpperCase();
      g = g.slice(m[0].length);
    }
    const alternatives = g.split(/\s+or\s+/i).map((alt) => {
      const all = alt.split(/\s+and\s+/i).map((t) => dep5Name(t, refs));
      return all.length > 1 ? all.join(' AND ') : all[0]!;
    });
    const part = alternatives.length > 1 ? alternatives.map((a) => (a.includes(' AND ') ? `(${a})` : a)).join(' OR ') : alternatives[0]!;
    if (i === 0) expr = part;
    else expr = `${wrap(expr)} ${op} ${wrap(part)}`;
  }
  return isSpdxExpression(expr) ? expr : undefined;
}

function wrap(e: string): string {
  return / (AND|OR) /.test(e) ? `(${e})` : e;
}

/** Several expressions a package declares (one per file group) → one, joined with AND, each distinct once. */
export function conjoin(expressions: readonly string[]): string | undefined {
  const distinct = [...new Set(expressions)].sort();
  if (distinct.length === 0) return undefined;
  if (distinct.length === 1) return distinct[0];
  return distinct.map(wrap).join(' AND ');
}
