import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DockerfileError, UsageError } from '@tsbuild/errors';
import { checkDockerfile, parseDockerfile, RULES, RULE_LIST } from '../index.ts';
import type { CheckOptions, RuleName } from '../index.ts';
import { kebabRuleName } from './rules.ts';
import { isValidImageReference } from './reference.ts';
import { parsePlatformSpec } from './platform.ts';
import { findCheckDirective, parseCheckSettings, withComments, DEFAULT_SETTINGS } from './settings.ts';
import { levenshtein, suggest } from './suggest.ts';

/** `LINE: message` for every finding of one rule. */
function findings(text: string, rule: RuleName, opts: CheckOptions = {}): string[] {
  return checkDockerfile(text, opts).warnings.filter((w) => w.rule === rule).map((w) => `${w.range.start.line}: ${w.message}`);
}

interface RuleCase {
  rule: RuleName;
  bad: string;
  expect: string[];
  good: string;
  opts?: CheckOptions;
}

const ignoreDockerfile: CheckOptions = { isIgnored: (p) => p === 'Dockerfile' || p.startsWith('tmp/'), ignorePatterns: ['Dockerfile', 'tmp'] };

const CASES: RuleCase[] = [
  {
    rule: 'StageNameCasing',
    bad: 'FROM scratch AS BadStageName\n',
    expect: ["1: Stage name 'BadStageName' should be lowercase"],
    good: 'FROM scratch AS good-name\n',
  },
  {
    rule: 'FromAsCasing',
    bad: 'FROM scratch AS base\nFROM scratch as base2\nfrom scratch AS base3\n',
    expect: ["2: 'as' and 'FROM' keywords' casing do not match", "3: 'AS' and 'from' keywords' casing do not match"],
    // a mixed-case FROM is ConsistentInstructionCasing's finding, not this rule's
    good: 'FROM scratch AS a\nfrom scratch as b\nFrom scratch as c\n',
  },
  {
    rule: 'NoEmptyContinuation',
    bad: 'FROM scratch\n# a comment line is fine\nCOPY Dockerfile \\\n\n.\n',
    expect: ['5: Empty continuation line'],
    good: 'FROM scratch\nCOPY Dockerfile \\\n# Port\n.\n',
  },
  {
    rule: 'ConsistentInstructionCasing',
    bad: 'From scratch as base\nFROM scratch AS base2\nfrom scratch\nCOPY a /a\nCOPY b /b\n',
    expect: [
      "1: Command 'From' should match the case of the command majority (uppercase)",
      "3: Command 'from' should match the case of the command majority (uppercase)",
    ],
    // ARGs before the first FROM do not count
    good: 'ARG A=1\nfrom scratch\ncopy a /a\n',
  },
  {
    rule: 'DuplicateStageName',
    bad: 'FROM scratch AS b\nFROM scratch AS B\n',
    expect: ['2: Duplicate stage name "b", stage names should be unique'],
    good: 'FROM scratch AS b1\nFROM scratch AS b2\n',
  },
  {
    rule: 'ReservedStageName',
    bad: 'FROM scratch AS scratch\nFROM scratch AS context\n',
    expect: ['1: Stage name should not use the same name as reserved stage "scratch"', '2: Stage name should not use the same name as reserved stage "context"'],
    good: 'FROM scratch\nFROM scratch AS a\n',
  },
  {
    rule: 'JSONArgsRecommended',
    bad: 'FROM scratch\nCMD mycommand\nENTRYPOINT mycommand\n',
    expect: [
      '2: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals',
      '3: JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals',
    ],
    // a SHELL, in the stage or in its base stage, makes the shell form deliberate
    good: 'FROM scratch AS base\nSHELL ["/usr/bin/customshell"]\nCMD mycommand\nFROM base\nENTRYPOINT mycommand\nFROM scratch\nCMD ["/app"]\n',
  },
  {
    rule: 'MaintainerDeprecated',
    bad: 'FROM scratch\nMAINTAINER me@example.org\n',
    expect: ['2: Maintainer instruction is deprecated in favor of using label'],
    good: 'FROM scratch\nLABEL org.opencontainers.image.authors="me@example.org"\n',
  },
  {
    rule: 'UndefinedArgInFrom',
    bad: 'FROM --platform=$BULIDPLATFORM scratch\nARG tag=latest\nFROM busybox:${tag}${version} AS b\n',
    expect: ["1: FROM argument 'BULIDPLATFORM' is not declared (did you mean BUILDPLATFORM?)", "3: FROM argument 'tag' is not declared", "3: FROM argument 'version' is not declared"],
    good: 'ARG base=scratch\nARG DEBUG\nFROM --platform=$BUILDPLATFORM $base\nFROM scratch${DEBUG}\nFROM scra${DEBUG:-tch}\n',
  },
  {
    rule: 'WorkdirRelativePath',
    bad: 'FROM scratch\nWORKDIR app/\nWORKDIR more\n',
    expect: ['2: Relative workdir "app/" can have unexpected results if the base image changes'],
    good: 'FROM scratch AS a\nWORKDIR /app\nFROM a AS b\nWORKDIR subdir/\nFROM scratch\nARG D=/srv\nWORKDIR $D\n',
  },
  {
    rule: 'UndefinedVar',
    bad: 'FROM scratch\nCOPY $foo .\nARG foo=bar\nARG DIR_ASSETS=assets/\nCOPY $DIR_ASSET .\nENV PATH=$PAHT:/tmp/bin\n',
    expect: [
      "2: Usage of undefined variable '$foo'",
      "5: Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)",
      "6: Usage of undefined variable '$PAHT' (did you mean $PATH?)",
    ],
    // RUN is the shell's business; ARG values carry into stages built on this one
    good: 'FROM scratch AS base\nARG foo=Dockerfile\nARG bare\nRUN echo $PATH $nothing\nCOPY ${bare}x .\nFROM base\nCOPY $foo .\n',
  },
  {
    rule: 'MultipleInstructionsDisallowed',
    bad: 'FROM scratch\nENTRYPOINT ["/a"]\nCMD ["/a"]\nHEALTHCHECK CMD ["/a"]\nCOPY <<EOF /a.txt\nhi\nEOF\nENTRYPOINT ["/b"]\nCMD ["/b"]\nHEALTHCHECK NONE\n',
    expect: [
      '2: Multiple ENTRYPOINT instructions should not be used in the same stage because only the last one will be used',
      '3: Multiple CMD instructions should not be used in the same stage because only the last one will be used',
      '4: Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used',
    ],
    good: 'FROM scratch AS a\nENTRYPOINT ["/a"]\nCMD ["/a"]\nFROM a AS b\nENTRYPOINT ["/b"]\nCMD ["/b"]\n',
  },
  {
    rule: 'LegacyKeyValueFormat',
    bad: 'FROM scratch\nENV testkey value\nlabel key value\n',
    expect: ['2: "ENV key=value" should be used instead of legacy "ENV key value" format', '3: "label key=value" should be used instead of legacy "label key value" format'],
    good: 'FROM scratch\nENV testkey=value\nLABEL key=value\n',
  },
  {
    rule: 'RedundantTargetPlatform',
    bad: 'FROM --platform=$TARGETPLATFORM scratch\nFROM --platform=${TARGETPLATFORM} scratch\n',
    expect: [
      '1: Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior',
      '2: Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as this is the default behavior',
    ],
    good: 'FROM --platform=$BUILDPLATFORM scratch\nFROM --platform=$TARGETOS/$TARGETARCH scratch AS x\n',
  },
  {
    rule: 'SecretsUsedInArgOrEnv',
    bad: 'FROM scratch\nARG SECRET_PASSPHRASE\nENV password=bar secret=baz\nARG super_duper_secret_token=foo auth=bar\nENV git_key=\n',
    expect: [
      '2: Do not use ARG or ENV instructions for sensitive data (ARG "SECRET_PASSPHRASE")',
      '3: Do not use ARG or ENV instructions for sensitive data (ENV "password")',
      '3: Do not use ARG or ENV instructions for sensitive data (ENV "secret")',
      '4: Do not use ARG or ENV instructions for sensitive data (ARG "super_duper_secret_token")',
      '4: Do not use ARG or ENV instructions for sensitive data (ARG "auth")',
      '5: Do not use ARG or ENV instructions for sensitive data (ENV "git_key")',
    ],
    good: 'ARG GLOBAL_TOKEN\nFROM scratch\nENV PUBLIC_KEY= sunflower=foo\nARG public_token\nARG SECRET_PASSPHRASE_FILE\nENV password_file=bar secret_File=baz\nARG AUTH_MODULE_VERSION\nARG keyboard monkey\n',
  },
  {
    rule: 'InvalidDefaultArgInFrom',
    bad: 'ARG VERSION\nARG IMAGE\nARG SFX="box:"\nFROM busybox:$VERSION\nFROM $IMAGE\nFROM busy${SFX}\nFROM Alpine\n',
    expect: [
      '4: Default value for ARG busybox:$VERSION results in empty or invalid base image name',
      '5: Default value for ARG $IMAGE results in empty or invalid base image name',
      '6: Default value for ARG busy${SFX} results in empty or invalid base image name',
      '7: Default value for ARG Alpine results in empty or invalid base image name',
    ],
    // build args do not rescue a default that is invalid, but an empty variant is fine
    good: 'ARG VERSION="latest"\nARG VARIANT\nARG TAG\nFROM busybox:${VERSION}\nFROM busybox:stable${VARIANT}\nFROM alpine:${TAG:-3.14}\nFROM scratch AS s\nFROM s\n',
    opts: { buildArgs: { VERSION: 'latest', IMAGE: 'busybox:latest' } },
  },
  {
    rule: 'FromPlatformFlagConstDisallowed',
    bad: 'FROM --platform=linux/amd64 scratch\nFROM --platform=linux/arm64 alpine AS base\n',
    expect: ['1: FROM --platform flag should not use constant value "linux/amd64"', '2: FROM --platform flag should not use constant value "linux/arm64"'],
    good: 'FROM --platform=linux/amd64 scratch AS my_amd64_stage\nFROM --platform=linux/amd64 scratch AS linux\nFROM --platform=${BUILDPLATFORM} alpine AS base\n',
  },
  {
    rule: 'CopyIgnoredFile',
    bad: 'FROM scratch\nCOPY Dockerfile .\nADD ./tmp/../Dockerfile /windy\nCOPY tmp/helloworld.txt /\n',
    expect: [
      '2: Attempting to Copy file "Dockerfile" that is excluded by .dockerignore',
      '3: Attempting to Add file "Dockerfile" that is excluded by .dockerignore',
      '4: Attempting to Copy file "tmp/helloworld.txt" that is excluded by .dockerignore',
    ],
    // COPY --from reads a stage, not the context; a URL is fetched; "." is the root
    good: 'FROM scratch AS base\nCOPY kept.txt /Dockerfile\nFROM base\nCOPY --from=base /Dockerfile /Dockerfile\nADD https://example.com/Dockerfile /x\nCOPY . .\n',
    opts: ignoreDockerfile,
  },
  {
    rule: 'InvalidDefinitionDescription',
    bad: '# check=experimental=InvalidDefinitionDescription\n# bar this is the bar\nARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n# definitely a bad comment\nARG version=latest\n# definitely a bad comment\nARG foo=baz bar=qux baz=quux\n',
    expect: [
      '3: Comment for ARG should follow the format: `# foo <description>`',
      '5: Comment for FROM should follow the format: `# base <description>`',
      '7: Comment for ARG should follow the format: `# version <description>`',
      '9: Comment for ARG should follow the format: `# <arg_key> <description>`',
    ],
    good: '# check=experimental=InvalidDefinitionDescription\n# foo this is the foo\nARG foo=bar\n\n# base this is the base image\nFROM scratch AS base\n# a comment\n#\nARG version=latest\n# baz this is the baz\nARG foo=baz bar=qux baz=quux\n#\nARG bit=bat\n# comment for something other than ARG or FROM\nCOPY Dockerfile .\n',
  },
  {
    rule: 'ExposeProtoCasing',
    bad: 'FROM scratch\nEXPOSE 80/TcP 8080/TCP 8080/udp\n',
    expect: ["2: Defined protocol '80/TcP' in EXPOSE instruction should be lowercase", "2: Defined protocol '8080/TCP' in EXPOSE instruction should be lowercase"],
    good: 'FROM scratch\nEXPOSE 80/tcp 53/udp 9000 7000-7010/sctp\n',
  },
  {
    rule: 'ExposeInvalidFormat',
    bad: 'FROM scratch\nEXPOSE 127.0.0.1:80:80 [::1]:8080:8080 5000:5000 8000\n',
    expect: [
      "2: EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'",
      "2: EXPOSE instruction should not define an IP address or host-port mapping, found '[::1]:8080:8080'",
      "2: EXPOSE instruction should not define an IP address or host-port mapping, found '5000:5000'",
    ],
    good: 'FROM scratch\nARG P=80\nEXPOSE 8000 $P\n',
  },
];

test('every rule has a case that triggers it and one that must not', () => {
  const covered = new Set(CASES.map((c) => c.rule));
  assert.deepEqual(RULE_LIST.map((r) => r.name).filter((n) => !covered.has(n as RuleName)), []);
  for (const c of CASES) {
    assert.deepEqual(findings(c.bad, c.rule, c.opts).sort(), [...c.expect].sort(), `${c.rule} triggers`);
    assert.deepEqual(findings(c.good, c.rule, c.opts), [], `${c.rule} stays quiet`);
    for (const w of checkDockerfile(c.bad, c.opts).warnings.filter((x) => x.rule === c.rule)) {
      assert.equal(w.description, RULES[c.rule].description);
      assert.equal(w.url, RULES[c.rule].url);
    }
  }
});

test('rule pages are docs.docker.com/go/dockerfile/rule/<kebab-name>/', () => {
  assert.equal(kebabRuleName('JSONArgsRecommended'), 'json-args-recommended');
  assert.equal(kebabRuleName('FromPlatformFlagConstDisallowed'), 'from-platform-flag-const-disallowed');
  assert.equal(RULES.UndefinedArgInFrom.url, 'https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/');
  assert.equal(RULES.SecretsUsedInArgOrEnv.url, 'https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/');
  for (const r of RULE_LIST) assert.match(r.url, /^https:\/\/docs\.docker\.com\/go\/dockerfile\/rule\/[a-z]+(-[a-z]+)+\/$/);
  // BuildKit runs all of them by default except InvalidDefinitionDescription
  assert.deepEqual(RULE_LIST.filter((r) => r.experimental).map((r) => r.name), ['InvalidDefinitionDescription']);
});

test('findings point at the instruction, or at the word when it is written there', () => {
  const r = checkDockerfile('FROM scratch AS Build\nCOPY --chown=1 $missing /\nFROM scratch as x\nENV  A=$B\n');
  const at = Object.fromEntries(r.warnings.map((w) => [w.rule + w.range.start.line, `${w.range.start.line}:${w.range.start.column}-${w.range.end.column}`]));
  assert.equal(at.StageNameCasing1, '1:17-22');
  assert.equal(at.UndefinedVar2, '2:16-24');
  assert.equal(at.FromAsCasing3, '3:14-16');
  assert.equal(at.UndefinedVar4, '4:8-10');
  // sorted by position
  const lines = r.warnings.map((w) => w.range.start.line);
  assert.deepEqual(lines, [...lines].sort((a, b) => a - b));
});

test('UndefinedVar needs the base image environment; baseEnv supplies it', () => {
  const text = 'FROM python:3\nARG VERSION=$PYTHON_VERSION\nCOPY $APP_DIR .\n';
  assert.deepEqual(findings(text, 'UndefinedVar'), [], 'an image of unknown environment may define anything');
  const seen: string[] = [];
  const baseEnv = (image: string): string[] | undefined => {
    seen.push(image);
    return image === 'python:3' ? ['PATH=/usr/local/bin:/usr/bin', 'PYTHON_VERSION=3.12'] : undefined;
  };
  assert.deepEqual(findings(text, 'UndefinedVar', { baseEnv }), ["3: Usage of undefined variable '$APP_DIR'"]);
  assert.deepEqual(seen, ['python:3']);
  // the name given to baseEnv is the FROM line after ARG expansion, build args included
  seen.length = 0;
  checkDockerfile('ARG B=alpine\nFROM $B:3\n', { baseEnv, buildArgs: { B: 'debian' } });
  assert.deepEqual(seen, ['debian:3']);
});

test('build args decide ARG values as in a build', () => {
  const text = 'FROM scratch\nARG A=$UNSET\nCOPY $A .\n';
  assert.deepEqual(findings(text, 'UndefinedVar'), ["2: Usage of undefined variable '$UNSET'"]);
  assert.deepEqual(findings(text, 'UndefinedVar', { buildArgs: { A: 'x' } }), []);
  // ENV expands every word before it sets any of them
  assert.deepEqual(findings('FROM scratch\nENV A=1 B=$A\n', 'UndefinedVar'), ["2: Usage of undefined variable '$A'"]);
  // heredoc bodies and RUN --mount values are expanded too
  assert.deepEqual(findings('FROM scratch\nCOPY <<EOF /x\n$BODY\nEOF\nRUN --mount=type=cache,target=$T true\n', 'UndefinedVar'), [
    "3: Usage of undefined variable '$BODY'",
    "5: Usage of undefined variable '$T'",
  ]);
  assert.deepEqual(findings('FROM scratch\nCOPY <<"EOF" /x\n$BODY\nEOF\n', 'UndefinedVar'), []);
});

test('TARGETPLATFORM follows the platform option', () => {
  const text = 'FROM --platform=$TARGETPLATFORM scratch\n';
  assert.equal(findings(text, 'RedundantTargetPlatform', { platform: 'linux/arm64' }).length, 1);
  assert.equal(findings('FROM --platform=linux/arm64 scratch AS a\n', 'FromPlatformFlagConstDisallowed').length, 1);
  assert.equal(findings('FROM --platform=linux/arm64 scratch AS arm64\n', 'FromPlatformFlagConstDisallowed').length, 0);
  // not a platform at all: the build fails on it, the rule says nothing
  assert.equal(findings('FROM --platform=nonsense scratch\n', 'FromPlatformFlagConstDisallowed').length, 0);
});

test('CopyIgnoredFile stays quiet with ! exceptions and names the root only for catch-all patterns', () => {
  const text = 'FROM scratch\nCOPY ./Dockerfile .\nCOPY . .\n';
  assert.deepEqual(findings(text, 'CopyIgnoredFile', { isIgnored: () => true, ignorePatterns: ['**', '!Dockerfile'] }), []);
  assert.deepEqual(findings(text, 'CopyIgnoredFile', { isIgnored: (p) => p !== '.', ignorePatterns: ['*'] }), [
    '2: Attempting to Copy file "Dockerfile" that is excluded by .dockerignore',
    '3: Attempting to Copy file "." that is excluded by .dockerignore',
  ]);
  assert.deepEqual(findings(text, 'CopyIgnoredFile', { isIgnored: () => false, ignorePatterns: ['.*'] }), []);
  assert.deepEqual(findings(text, 'CopyIgnoredFile'), [], 'no ignore rules, nothing to report');
});

test('# check=skip, skip=all, error=true and experimental', () => {
  const body = 'FROM scratch as base\ncopy Dockerfile .\nCMD run\n';
  const rules = (text: string, opts?: CheckOptions): string[] => checkDockerfile(text, opts).warnings.map((w) => w.rule);
  assert.deepEqual(rules(body), ['FromAsCasing', 'ConsistentInstructionCasing', 'JSONArgsRecommended']);
  assert.deepEqual(rules(`#check=skip=ConsistentInstructionCasing, JSONArgsRecommended\n${body}`), ['FromAsCasing', 'JSONArgsRecommended'],
    'the value ends at the first space, as in BuildKit');
  assert.deepEqual(rules(`#check=skip=ConsistentInstructionCasing,JSONArgsRecommended\n${body}`), ['FromAsCasing']);
  assert.deepEqual(rules(`# check = skip=all\n${body}`), []);
  const directive = checkDockerfile(`# syntax=docker/dockerfile:1\n# check=skip=all;error=true\n${body}`);
  assert.equal(directive.settingsFrom, 'directive');
  assert.deepEqual(directive.directive, { value: 'skip=all;error=true', range: { start: { line: 2, column: 1 }, end: { line: 2, column: 28 } } });
  assert.deepEqual(directive.errors, [], 'error=true with nothing found passes');

  const failing = checkDockerfile(`#check=skip=ConsistentInstructionCasing,JSONArgsRecommended;error=true\n${body}`);
  assert.deepEqual(failing.warnings.map((w) => w.rule), ['FromAsCasing']);
  assert.equal(failing.errors.length, 1);
  assert.equal(failing.errors[0]?.detail, 'lint violation found for rules: FromAsCasing');
  assert.equal(failing.errors[0]?.range?.start.line, 2);

  // experimental rules run only when named, and skip=all does not switch them off
  const described = '# nonsense\nFROM scratch AS base\n';
  assert.deepEqual(rules(described), []);
  assert.deepEqual(rules(`# check=experimental=all\n\n${described}`), ['InvalidDefinitionDescription']);
  assert.deepEqual(rules(`# check=skip=all;experimental=InvalidDefinitionDescription\n\n${described}`), ['InvalidDefinitionDescription']);

  // after an instruction it is a comment: it governs the next instruction only, until a bare `#`
  assert.deepEqual(rules(`FROM scratch\n# check=skip=all\nFROM scratch as x\nFROM scratch as y\n`), ['FromAsCasing']);
  assert.deepEqual(rules(`FROM scratch\n# check=skip=all\n#\nFROM scratch as x\n`), ['FromAsCasing']);
  const shebang = checkDockerfile(`#!/usr/bin/env dockerfile\n# check=skip=all\n#\n${body}`);
  assert.deepEqual([shebang.warnings, shebang.directive?.range.start.line], [[], 2], 'a #! first line is skipped');
  assert.equal(findCheckDirective('# a comment\n# check=skip=all\nFROM x\n'), undefined);
});

test('BUILDKIT_DOCKERFILE_CHECK replaces the directive; comments above an instruction add to either', () => {
  const text = '#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n';
  const r = checkDockerfile(text, { buildArgs: { BUILDKIT_DOCKERFILE_CHECK: 'skip=ConsistentInstructionCasing;error=true' } });
  assert.equal(r.settingsFrom, 'build-arg');
  assert.deepEqual(r.warnings.map((w) => w.rule), ['FromAsCasing']);
  assert.equal(r.errors[0]?.detail, 'lint violation found for rules: FromAsCasing');
  const quiet = checkDockerfile(`#check=error=true\nFROM scratch as base\n`, { buildArgs: { BUILDKIT_DOCKERFILE_CHECK: 'skip=all' } });
  assert.deepEqual([quiet.warnings, quiet.errors], [[], []]);
  // an unreadable directive is the Dockerfile's error; an unreadable build arg is the caller's
  assert.equal(checkDockerfile('#check=bogus\nFROM scratch\n', { buildArgs: { BUILDKIT_DOCKERFILE_CHECK: '' } }).errors.length, 0);
  assert.throws(() => checkDockerfile('FROM scratch\n', { buildArgs: { BUILDKIT_DOCKERFILE_CHECK: 'error=maybe' } }), UsageError);
  const bad = checkDockerfile('#check=skip=all;bogus=1\nFROM scratch as x\n');
  assert.deepEqual(bad.warnings, []);
  assert.equal(bad.errors[0]?.detail, 'failed to parse check options: invalid check option "bogus"');
  assert.equal(bad.errors[0]?.range?.start.line, 1);

  const local = [
    'FROM scratch',
    '# check=skip=JSONArgsRecommended // shell form on purpose',
    'CMD mycommand',
    '# check=skip=all',
    'MAINTAINER me',
    'MAINTAINER you',
    '# check=skip=LegacyKeyValueFormat',
    '# another comment',
    'ENV a b',
    'ENV c d',
  ].join('\n');
  assert.deepEqual(checkDockerfile(local).warnings.map((w) => `${w.rule}@${w.range.start.line}`), [
    'MaintainerDeprecated@6',
    'LegacyKeyValueFormat@10',
  ]);
  // a repeated instruction is reported at the first one but governed by the comment above the second
  const multiple = 'FROM scratch\nCMD ["a"]\n# check=skip=MultipleInstructionsDisallowed\nCMD ["b"]\n';
  assert.deepEqual(checkDockerfile(multiple).warnings, []);
});

test('a parse error keeps the findings before it; duplicate stage names are both', () => {
  const r = checkDockerfile('FROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\n', { file: 'ctx/Dockerfile' });
  assert.deepEqual(r.warnings.map((w) => `${w.rule}@${w.range.start.line}`), ['StageNameCasing@1', 'MaintainerDeprecated@2']);
  assert.equal(r.errors.length, 1);
  assert.ok(r.errors[0] instanceof DockerfileError);
  assert.equal(r.errors[0]?.file, 'ctx/Dockerfile');
  assert.equal(r.errors[0]?.range?.start.line, 3);
  assert.match(r.errors[0]?.detail ?? '', /unknown instruction: BADCMD/);
  assert.equal(r.dockerfile, undefined);

  const syntax = checkDockerfile('FROM scratch\nRUN <<EOF\nnever ends\n', { file: 'F' });
  assert.equal(syntax.errors[0]?.file, 'F');
  assert.match(syntax.errors[0]?.detail ?? '', /unterminated heredoc/);

  // tsbuild refuses to build duplicate stage names; the check says so and names the rule
  const dup = checkDockerfile('FROM scratch AS b\nFROM scratch AS b\n');
  assert.deepEqual(dup.warnings.map((w) => w.rule), ['DuplicateStageName']);
  assert.match(dup.errors[0]?.detail ?? '', /duplicate stage name "b"/);

  const ok = checkDockerfile('FROM scratch\nCOPY a /a\n');
  assert.deepEqual([ok.warnings, ok.errors], [[], []]);
  assert.equal(ok.dockerfile?.stages.length, 1);
});

test('parseDockerfile reports the parse-time rules under the same names', () => {
  const df = parseDockerfile('FROM scratch AS base\nSHELL ["/bin/bash", "-c"]\nCMD run\nFROM base\nENTRYPOINT run\nFROM scratch\nCMD run\nenv k v\n');
  assert.deepEqual(df.warnings.map((w) => `${w.rule}@${w.range.start.line}: ${w.message}`), [
    'LegacyKeyValueFormat@8: "env key=value" should be used instead of legacy "env key value" format',
    'JSONArgsRecommended@7: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals',
  ]);
});

test('settings, directives and suggestions parse as BuildKit reads them', () => {
  assert.deepEqual(parseCheckSettings(' skip = A, B ;error=1; experimental=all'), { skipAll: false, skip: ['A', 'B'], experimentalAll: true, experimental: [], error: true });
  assert.deepEqual(parseCheckSettings(''), DEFAULT_SETTINGS);
  assert.throws(() => parseCheckSettings('skip'), /invalid check option "skip"/);
  assert.throws(() => parseCheckSettings('error=yes'), /ParseBool/);
  // the third part keeps any further `;`
  assert.deepEqual(parseCheckSettings('error=false;skip=a;experimental=b;c').experimental, ['b;c']);
  const merged = withComments({ ...DEFAULT_SETTINGS, error: true }, ['unrelated', 'check=skip=X;error=false // why', 'check=skip=Y']);
  assert.deepEqual(merged, { skipAll: false, skip: ['X'], experimentalAll: false, experimental: [], error: true });
  assert.equal(withComments(DEFAULT_SETTINGS, ['check=nonsense']), DEFAULT_SETTINGS);
  assert.equal(levenshtein('BULIDPLATFORM', 'BUILDPLATFORM'), 2);
  assert.equal(suggest('PAHT', ['HOME', 'PATH']), 'PATH');
  assert.equal(suggest('PATH', ['PATH', 'PAT']), '');
  assert.equal(suggest('X', ['ABCDEF']), '');
  assert.equal(suggest('A'.repeat(100_000), ['A'.repeat(99_999)]), '', 'huge hostile names are not compared');
});

test('image references and platforms are judged by the grammar Docker uses', () => {
  for (const ok of ['scratch', 'busybox', 'busybox:latest', 'library/busybox:1.36', 'ghcr.io/o/r:v1', 'localhost:5000/x', 'Foo.io/bar',
    `alpine@sha256:${'a'.repeat(64)}`, '[::1]:5000/x:y', 'a/b/c-d__e.f']) {
    assert.ok(isValidImageReference(ok), ok);
  }
  for (const bad of ['', 'busybox:', 'Alpine', 'busy box', ':latest', 'a//b', `alpine@sha256:${'a'.repeat(63)}`, 'a' .repeat(64).replace(/a/g, 'f'),
    'x@md5:0123456789abcdef0123456789abcdef', `${'a'.repeat(300)}`]) {
    assert.ok(!isValidImageReference(bad), bad);
  }
  assert.deepEqual(parsePlatformSpec('linux/amd64'), { os: 'linux', architecture: 'amd64', variant: '' });
  assert.deepEqual(parsePlatformSpec('Linux/x86_64'), { os: 'linux', architecture: 'amd64', variant: '' });
  assert.deepEqual(parsePlatformSpec('linux/arm/v6'), { os: 'linux', architecture: 'arm', variant: 'v6' });
  assert.deepEqual(parsePlatformSpec('arm64'), { os: 'linux', architecture: 'arm64', variant: '' });
  assert.deepEqual(parsePlatformSpec('windows'), { os: 'windows', architecture: 'amd64', variant: '' });
  for (const bad of ['', 'linux/', 'a/b/c/d', 'linux/*', 'nonsense']) assert.equal(parsePlatformSpec(bad), undefined, bad);
});

test('thousands of variables are all reported; suggestions stop once their budget is spent', () => {
  let text = 'FROM scratch\n';
  for (let i = 0; i < 3000; i++) text += `ENV V_${i}=$U_${i}\n`;
  const found = checkDockerfile(text).warnings;
  assert.equal(found.length, 3000);
  assert.ok(found.every((w, i) => w.rule === 'UndefinedVar' && w.message.startsWith(`Usage of undefined variable '$U_${i}'`) && w.range.start.line === i + 2));
  assert.equal(found[1]?.message, "Usage of undefined variable '$U_1' (did you mean $V_0?)");
  assert.equal(found[2999]?.message, "Usage of undefined variable '$U_2999'");
});
