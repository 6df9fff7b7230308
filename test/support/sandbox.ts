/** The sandbox tests launch agents with: the real one (bwrap), with a uid range of this test process's own. */
import { nodeSandbox, type NodeSandbox } from '../../src/sidecar/runtime/sandbox.js';

/**
 * 64 uids from 300000 up, chosen by pid: test processes running at once on this machine (several
 * simulated nodes) never hand out the same uid, as two live agents of one node never share one.
 */
export function testUidRange(): { first: number; count: number } {
  return { first: 300_000 + (process.pid % 10_000) * 64, count: 64 };
}

export function testSandbox(): Promise<NodeSandbox> {
  return nodeSandbox('bwrap', testUidRange());
}
