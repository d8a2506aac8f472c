import { recordSpan, writeTrace } from '@tsbuild/builder';
import { run } from './cli.ts';

// Node's start and the evaluation of this bundle, up to here.
recordSpan('startup', 0);
void run(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  writeTrace();
});
