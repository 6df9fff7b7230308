import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decideRestart, type RestartDecision } from '../../src/cmd/restartPolicy.js';

const policy = { initialDelayMs: 1000, maxDelayMs: 30_000, resetAfterMs: 60_000 };

describe('decideRestart', () => {
  const cases: { name: string; exit: { code: number | null; signal: NodeJS.Signals | null; ranMs: number }; crashesBefore: number; want: RestartDecision }[] = [
    { name: 'first crash: the first delay', exit: { code: 1, signal: null, ranMs: 500 }, crashesBefore: 0, want: { kind: 'restart', delayMs: 1000, crashesInARow: 1 } },
    { name: 'killed by a signal counts as a crash', exit: { code: null, signal: 'SIGKILL', ranMs: 500 }, crashesBefore: 0, want: { kind: 'restart', delayMs: 1000, crashesInARow: 1 } },
    { name: 'crashes in a row double the delay', exit: { code: 1, signal: null, ranMs: 500 }, crashesBefore: 3, want: { kind: 'restart', delayMs: 8000, crashesInARow: 4 } },
    { name: 'the delay is capped', exit: { code: 1, signal: null, ranMs: 500 }, crashesBefore: 12, want: { kind: 'restart', delayMs: 30_000, crashesInARow: 13 } },
    { name: 'a long healthy run resets the count', exit: { code: 1, signal: null, ranMs: 60_000 }, crashesBefore: 12, want: { kind: 'restart', delayMs: 1000, crashesInARow: 1 } },
    {
      name: 'exiting 0 unasked is restarted too (a sidecar never ends by itself)',
      exit: { code: 0, signal: null, ranMs: 10 },
      crashesBefore: 1,
      want: { kind: 'restart', delayMs: 2000, crashesInARow: 2 },
    },
    { name: 'a usage error is not retried', exit: { code: 2, signal: null, ranMs: 10 }, crashesBefore: 0, want: { kind: 'give-up', exitCode: 2 } },
  ];
  for (const c of cases) it(c.name, () => assert.deepEqual(decideRestart(c.exit, c.crashesBefore, policy), c.want));
});
