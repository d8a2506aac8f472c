import { recordSpan, writeTrace } from '@tsbuild/builder';
import { run } from './cli.ts';
import { reportError } from './report.ts';
import { joinNamespace, rootless, wantsNamespace } from './userns.ts';

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
const argv = process.argv.slice(2);
const debug = argv.includes('--debug');
// An ordinary user's command runs again in a user namespace where tsbuild is root.
const work = async (): Promise<number> => {
  joinNamespace();
  return wantsNamespace(argv) ? await rootless(argv) : await run(argv);
};
void work()
  .catch((e: unknown) => reportError(e, debug))
  .then((code) => {
    finished = true;
    process.exitCode = code;
    writeTrace();
  });
