import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { heartbeatStatus } from '../../src/sidecar/registration.js';

describe('heartbeatStatus', () => {
  const now = new Date('2026-12-04T20:00:00Z');
  const base = { capacity: 8, running: 3, version: 'v1', now };

  it('a sidecar making progress is Ready', () => {
    const s = heartbeatStatus(undefined, base);
    assert.deepEqual([s.capacity, s.running, s.sidecarVersion, s.lastHeartbeatTime], [8, 3, 'v1', '2026-12-04T20:00:00Z']);
    const ready = s.conditions?.find((c) => c.type === 'Ready');
    assert.equal(ready?.status, 'True');
    assert.equal(ready?.reason, 'SidecarReady');
  });

  it('a stalled sidecar still beats but is not Ready, and says why', () => {
    const s = heartbeatStatus(undefined, { ...base, stalled: 'relist last completed 75s ago, threshold 60s' });
    assert.equal(s.lastHeartbeatTime, '2026-12-04T20:00:00Z');
    const ready = s.conditions?.find((c) => c.type === 'Ready');
    assert.equal(ready?.status, 'False');
    assert.equal(ready?.reason, 'SidecarStalled');
    assert.equal(ready?.message, 'relist last completed 75s ago, threshold 60s');
  });

  it('Ready again once it recovers, with the time it changed', () => {
    const stalled = heartbeatStatus(undefined, { ...base, stalled: 'stuck' });
    const later = new Date('2026-12-04T20:01:00Z');
    const s = heartbeatStatus(stalled, { ...base, now: later });
    const ready = s.conditions?.find((c) => c.type === 'Ready');
    assert.equal(ready?.status, 'True');
    assert.equal(ready?.lastTransitionTime, '2026-12-04T20:01:00Z');
  });
});
