import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DockerfileError } from '@tsbuild/errors';
import { envExpander, expandInstruction } from './expand.ts';
import { parseMount } from './mount.ts';
import { ShellError, processWord } from './shell.ts';
import { parseDockerfile } from './stages.ts';

/*
 * Hostile-input properties for the layers above the parser: whatever the text, conversion and
 * expansion either succeed or throw a located DockerfileError; never a TypeError or a hang.
 */

const keywords = ['FROM', 'RUN', 'CMD', 'LABEL', 'MAINTAINER', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME',
  'USER', 'WORKDIR', 'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL', 'NOPE'];
const tokens = ['--mount=', '--from=', '--chmod=', '--link', '--interval=', 'type=cache', 'target=/x', ',', '"', "'", '$',
  '${', '}', '[', ']', '=', ' ', 'AS', 'CMD', 'NONE', '<<EOF', '\\', 'x', '1s', '0755', 'ssh', 'secret', 'id=a'];

const line = fc
  .tuple(fc.constantFrom(...keywords), fc.array(fc.oneof(fc.constantFrom(...tokens), fc.string({ maxLength: 4 })), { maxLength: 8 }))
  .map(([k, parts]) => `${k} ${parts.join('')}`);

test('any Dockerfile text converts or fails with a located DockerfileError', () => {
  fc.assert(
    fc.property(fc.array(line, { maxLength: 6 }), fc.boolean(), (lines, withFrom) => {
      const text = (withFrom ? 'FROM scratch\n' : '') + lines.join('\n') + '\nEOF\n';
      try {
        const df = parseDockerfile(text, { file: 'fuzz' });
        for (const stage of df.stages) {
          for (const inst of stage.instructions) {
            try {
              expandInstruction(inst, envExpander({ x: 'v' }), { file: 'fuzz' });
            } catch (e) {
              assert.ok(e instanceof DockerfileError && e.range !== undefined, String(e));
            }
          }
        }
      } catch (e) {
        assert.ok(e instanceof DockerfileError, `${String(e)}\n${text}`);
        assert.ok(e.range !== undefined && e.file === 'fuzz', e.message);
      }
    }),
    { seed: 424242, numRuns: 400 },
  );
});

test('any word expands or throws ShellError', () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.constantFrom(...tokens, '#', '%', '/', ':-', ':?', '*', '?'), fc.string({ maxLength: 3 })), { maxLength: 12 }), (parts) => {
      const word = parts.join('');
      try {
        processWord(word, { x: 'value*with?glob[chars]', e: '' });
      } catch (e) {
        assert.ok(e instanceof ShellError, `${String(e)} for ${word}`);
      }
    }),
    { seed: 4242, numRuns: 1000 },
  );
});

test('any mount spec parses or fails with a DockerfileError', () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.constantFrom(...tokens, 'ro', 'rw=x', 'mode=', 'uid=1', 'size=1k', 'sharing=locked', 'from=', 'type=tmpfs', 'type=bind'), fc.string({ maxLength: 3 })), { maxLength: 10 }), (parts) => {
      const spec = parts.join('');
      try {
        parseMount(spec);
      } catch (e) {
        assert.ok(e instanceof DockerfileError, `${String(e)} for ${spec}`);
      }
    }),
    { seed: 99, numRuns: 1000 },
  );
});
