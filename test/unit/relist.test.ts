import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { relistWants, type Glimpse } from '../../src/sidecar/relist.js';

const g = (pane: Glimpse['pane'], outputMtimeMs: number): Glimpse => ({ pane, outputMtimeMs });

describe('relistWants', () => {
  const cases: { name: string; last: Glimpse | undefined; now: Glimpse; resync?: boolean; want: boolean }[] = [
    { name: 'never seen: reconcile', last: undefined, now: g('alive', 0), want: true },
    { name: 'nothing changed: leave it', last: g('alive', 5000), now: g('alive', 5000), want: false },
    { name: 'the pane died (exit missed by inotify): reconcile', last: g('alive', 5000), now: g('dead', 5000), want: true },
    { name: 'the session vanished (tmux server gone): reconcile', last: g('alive', 5000), now: g('none', 5000), want: true },
    { name: 'the session appeared (launched): reconcile', last: g('none', 0), now: g('alive', 0), want: true },
    { name: 'output moved less than the resolution: leave it', last: g('alive', 5000), now: g('alive', 5999), want: false },
    { name: 'output moved by the resolution: reconcile (idle timeout)', last: g('alive', 5000), now: g('alive', 6000), want: true },
    { name: 'first output: reconcile', last: g('alive', 0), now: g('alive', 1_764_000_000_000), want: true },
    { name: 'resync: reconcile even unchanged', last: g('alive', 5000), now: g('alive', 5000), resync: true, want: true },
  ];
  for (const c of cases) it(c.name, () => assert.equal(relistWants(c.last, c.now, 1000, c.resync ?? false), c.want));
});
