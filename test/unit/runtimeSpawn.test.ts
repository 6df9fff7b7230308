import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { coalesce } from '../../src/sidecar/runtime/coalesce.js';
import { onSpawn, registerSpawnMetric, spawnProcess, withSpawnOp, type SpawnOp } from '../../src/sidecar/runtime/spawn.js';

/** The ops of the spawns fn makes (real processes: `true`). */
async function spawnsOf(fn: () => Promise<unknown>): Promise<SpawnOp[]> {
  const seen: SpawnOp[] = [];
  const off = onSpawn((op) => seen.push(op));
  try {
    await fn();
  } finally {
    off();
  }
  return seen;
}

const runTrue = () => spawnProcess('true', [], { timeout: 5_000, stdin: 'ignore' });

describe('spawn counting', () => {
  it('counts each process for the operation whose async context started it', async () => {
    const ops = await spawnsOf(async () => {
      await runTrue();
      await withSpawnOp('launch', async () => {
        await runTrue();
        await Promise.all([runTrue(), withSpawnOp('cleanup', runTrue)]);
      });
    });
    assert.deepEqual(ops.sort(), ['cleanup', 'launch', 'launch', 'other']);
  });

  it('counts a read shared by callers once, for the caller that started it', async () => {
    const shared = coalesce(async () => (await runTrue()).exitCode);
    const ops = await spawnsOf(() => Promise.all([withSpawnOp('cleanup', shared), withSpawnOp('launch', shared)]));
    // The second caller waits for a fresh run (coalesce), which its own context starts.
    assert.deepEqual(ops, ['cleanup', 'launch']);
    const joined = await spawnsOf(() => Promise.all([withSpawnOp('cleanup', shared), withSpawnOp('launch', shared), withSpawnOp('launch', shared)]));
    assert.deepEqual(joined, ['cleanup', 'launch']);
  });

  it('exports agent_operator_node_process_spawns_total{op}, every op present from the start', async () => {
    const registry = new Registry();
    registerSpawnMetric(registry);
    await withSpawnOp('launch', runTrue);
    const text = await registry.metrics();
    assert.match(text, /agent_operator_node_process_spawns_total\{op="launch"\} 1\n/);
    assert.match(text, /agent_operator_node_process_spawns_total\{op="cleanup"\} 0\n/);
    assert.match(text, /agent_operator_node_process_spawns_total\{op="other"\} 0\n/);
  });
});
