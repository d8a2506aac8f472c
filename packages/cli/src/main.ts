import { recordSpan, writeTrace } from '@tsbuild/builder';
import { run } from './cli.ts';

// Node's start and the evaluation of this bundle, up to here.
recordSpan('startup', 0);
let finished = false;
// Should the work ever stop without finishing (a promise nothing will settle), Node would exit 0
// with nothing done: say so and fail instead.
process.once('beforeExit', () => {
  if (finished) return;
  process.stderr.write('error: tsbuild stopped before the command finished (this is a bug in tsbuild)\n');
  process.exitCode = 70;
});
void run(process.argv.slice(2)).then((code) => {
  finished = true;
  process.exitCode = code;
  writeTrace();
});
