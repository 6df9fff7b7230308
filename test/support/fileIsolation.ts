/**
 * Loaded with `--import` into every integration test file's process (test/run.ts): after the file's
 * suites and their hooks have run, it fails the file if it left a namespace, an Agent or an AgentNode
 * on the shared control plane, naming each, and then removes them by force so the next file starts
 * from a clean cluster (its controller and sidecars watch every namespace).
 *
 * Suites' `after` hooks (where stacks stop) run before this one; a file-level `after` would run after
 * it, so integration files keep their hooks inside a `describe`.
 */
import { after } from 'node:test';
import { basename } from 'node:path';
import { kubeConfig } from './cluster.js';
import { awaitNoLeftovers, describeLeftover, purgeLeftovers } from './leftovers.js';

/**
 * Long enough for a namespace whose Agents are still being cleaned up (grace periods) to go away;
 * AO_LEFTOVER_SETTLE_MS shortens it for the test of this check itself.
 */
const SETTLE_MS = Number(process.env.AO_LEFTOVER_SETTLE_MS ?? 120_000);

after(
  async () => {
    const kc = kubeConfig();
    const left = await awaitNoLeftovers(kc, SETTLE_MS);
    if (left.length === 0) return;
    const purged = await purgeLeftovers(kc, left).then(
      () => 'removed them by force',
      (err: unknown) => `and removing them by force failed too: ${err instanceof Error ? err.message : String(err)}`,
    );
    throw new Error(`${basename(process.argv[1] ?? 'this test file')} left ${left.length} object(s) behind after ${SETTLE_MS / 1000} s (${purged}):\n  ${left.map(describeLeftover).join('\n  ')}`);
  },
  { timeout: SETTLE_MS + 120_000 },
);
