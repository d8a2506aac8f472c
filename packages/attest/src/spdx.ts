/**
 * SPDX 2.3 JSON documents of the packages in an image, and their in-toto Statement with the
 * predicate type BuildKit uses for SBOMs. Everything that could vary between two runs over the
 * same packages comes from the caller (the time, the namespace seed), so a SOURCE_DATE_EPOCH
 * build gives the same SBOM bytes every time.
 */
import { createHash } from 'node:crypto';
import { UsageError } from '@tsbuild/errors';
import { IN_TOTO_STATEMENT_V1, statementSubjects, timestamp } from './intoto.ts';
import type { Statement, SubjectInput } from './intoto.ts';
import { mergePackages } from './package.ts';
import type { FoundPackage } from './package.ts';

export const SPDX_PREDICATE_TYPE = 'https://spdx.dev/Document';
export const SPDX_ROOT_ID = 'SPDXRef-Image';

export interface SpdxExternalRef {
  referenceCategory: 'PACKAGE-MANAGER';
  referenceType: 'purl';
  referenceLocator: string;
}

export interface SpdxPackage {
  SPDXID: string;
  name: string;
  versionInfo?: string;
  downloadLocation: string;
  filesAnalyzed: false;
  licenseConcluded: string;
  licenseDeclared: string;
  copyrightText: string;
  externalRefs?: SpdxExternalRef[];
  sourceInfo?: string;
  primaryPackagePurpose?: string;
}

export interface SpdxRelationship {
  spdxElementId: string;
  relationshipType: 'DESCRIBES' | 'CONTAINS';
  relatedSpdxElement: string;
}

export interface SpdxDocument {
  spdxVersion: 'SPDX-2.3';
  dataLicense: 'CC0-1.0';
  SPDXID: 'SPDXRef-DOCUMENT';
  name: string;
  documentNamespace: string;
  creationInfo: { created: string; creators: string[] };
  packages: SpdxPackage[];
  relationships: SpdxRelationship[];
  hasExtractedLicensingInfos?: { licenseId: string; extractedText: string; name: string }[];
}

export interface SpdxOptions {
  /** The document's (and its root package's) name: the image, e.g. `registry.example/app:1.0`. */
  name: string;
  /**
   * Makes documentNamespace unique to this image: pass the image's manifest or config digest.
   * The namespace is a hash of the seed, the name and the packages, so it changes when they do.
   */
  namespaceSeed: string;
  /** creationInfo.created: the build's time (SOURCE_DATE_EPOCH when set). */
  created: Date | string;
  /** tsbuild's version, for `Tool: tsbuild-<version>`. */
  tsbuildVersion: string;
  /** More creators, in SPDX's form (`Organization: …`, `Person: …`). */
  creators?: readonly string[];
}

const NOASSERTION = 'NOASSERTION';

function idPart(s: string): string {
  return s.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 64) || 'x';
}

function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/** A UUID (RFC 9562 version 8, name-based by sha256) of some text: stable, and unique as the text is. */
function uuidOf(text: string): string {
  const h = Buffer.from(sha256Hex(text).slice(0, 32), 'hex');
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

function sourceInfo(locations: readonly string[]): string {
  const shown = locations.slice(0, 10).join(', ');
  return locations.length > 10 ? `found in ${shown} and ${locations.length - 10} more` : `found in ${shown}`;
}

/**
 * The SPDX 2.3 document: a root package for the image (DESCRIBES) that CONTAINS every package
 * found, each with its purl as a PACKAGE-MANAGER reference. licenseDeclared is what the package
 * declares; licenseConcluded is NOASSERTION, since tsbuild reads metadata and examines no files.
 */
export function spdxDocument(packages: readonly FoundPackage[], opts: SpdxOptions): SpdxDocument {
  if (opts.name === '') throw new UsageError('an SPDX document needs a name');
  if (opts.tsbuildVersion === '') throw new UsageError('an SPDX document needs the tsbuild version');
  const pkgs = mergePackages(packages);
  const extracted = new Map<string, string>();
  const spdxPackages: SpdxPackage[] = [
    {
      SPDXID: SPDX_ROOT_ID,
      name: opts.name,
      downloadLocation: NOASSERTION,
      filesAnalyzed: false,
      licenseConcluded: NOASSERTION,
      licenseDeclared: NOASSERTION,
      copyrightText: NOASSERTION,
      primaryPackagePurpose: 'CONTAINER',
    },
  ];
  const relationships: SpdxRelationship[] = [{ spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: SPDX_ROOT_ID }];
  const seenIds = new Set<string>([SPDX_ROOT_ID]);
  for (const p of pkgs) {
    let id = `SPDXRef-Package-${p.ecosystem}-${idPart(p.name)}-${sha256Hex(p.purl).slice(0, 16)}`;
    for (let n = 2; seenIds.has(id); n++) id = `${id}-${n}`;
    seenIds.add(id);
    for (const [ref, text] of Object.entries(p.license?.refs ?? {})) if (!extracted.has(ref)) extracted.set(ref, text);
    spdxPackages.push({
      SPDXID: id,
      name: p.name,
      versionInfo: p.version,
      downloadLocation: NOASSERTION,
      filesAnalyzed: false,
      licenseConcluded: NOASSERTION,
      licenseDeclared: p.license?.expression ?? NOASSERTION,
      copyrightText: NOASSERTION,
      externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: p.purl }],
      sourceInfo: sourceInfo(p.locations),
    });
    relationships.push({ spdxElementId: SPDX_ROOT_ID, relationshipType: 'CONTAINS', relatedSpdxElement: id });
  }
  const fingerprint = `${opts.namespaceSeed}\0${opts.name}\0${pkgs.map((p) => `${p.purl}\0${p.license?.expression ?? ''}`).join('\n')}`;
  const doc: SpdxDocument = {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: opts.name,
    documentNamespace: `https://spdx.org/spdxdocs/tsbuild/${idPart(opts.name)}-${uuidOf(fingerprint)}`,
    creationInfo: {
      created: timestamp(opts.created, 'SBOM creation time'),
      creators: [`Tool: tsbuild-${opts.tsbuildVersion}`, ...(opts.creators ?? [])],
    },
    packages: spdxPackages,
    relationships,
  };
  if (extracted.size > 0) {
    doc.hasExtractedLicensingInfos = [...extracted.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([licenseId, text]) => ({ licenseId, extractedText: text, name: text.split('\n')[0]!.slice(0, 100) }));
  }
  return doc;
}

/** The SBOM as an in-toto Statement about the image manifest. */
export function sbomStatement(doc: SpdxDocument, subject: SubjectInput): Statement<SpdxDocument> {
  return { _type: IN_TOTO_STATEMENT_V1, subject: statementSubjects(subject), predicateType: SPDX_PREDICATE_TYPE, predicate: doc };
}
