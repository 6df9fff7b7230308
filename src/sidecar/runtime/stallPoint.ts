/**
 * A test hook, inert unless the process starts with AGENT_OPERATOR_TEST_STALL_DIR set (read once,
 * here, at start-up; nothing sets it outside tests). stallPoint(step) then opens `<dir>/<step>` for
 * reading, through the bounded file operations and WITHOUT O_NONBLOCK: a FIFO planted there with no
 * writer blocks that open in a libuv worker for real, as a hung filesystem would, until the test
 * opens the FIFO for writing. Nothing there: the open fails with ENOENT and the step carries on.
 * The steps are STALL_POINTS.
 */
import { join } from 'node:path';
import { open } from './boundedFs.js';
import { errnoOf } from './files.js';

export const STALL_DIR_ENV = 'AGENT_OPERATOR_TEST_STALL_DIR';

export const STALL_POINTS = ['relist'] as const;
export type StallPoint = (typeof STALL_POINTS)[number];

const armedIn = process.env[STALL_DIR_ENV] || undefined;

export async function stallPoint(step: StallPoint): Promise<void> {
  if (!armedIn) return;
  try {
    await (await open(join(armedIn, step), 'r')).close();
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw err;
  }
}
