/**
 * A test hook, inert unless the process starts with AGENT_OPERATOR_TEST_CRASH_FILE set (read once,
 * here, at start-up; nothing sets it outside tests). Launch and cleanup call crashPoint(step) right
 * after each step; when the file names that step (`launch:session`, `cleanup:archive`, ...), the
 * file is removed and the process SIGKILLs itself: a crash exactly there, which no handler softens.
 * Removing the file first lets the restarted process, with the same command line and environment,
 * carry on past the step. The steps are CRASH_POINTS.
 */
import { readFileSync, unlinkSync } from 'node:fs';

export const CRASH_FILE_ENV = 'AGENT_OPERATOR_TEST_CRASH_FILE';

export const CRASH_POINTS = [
  'launch:workspace',
  // After the one tmux call that creates the session, sets remain-on-exit and attaches the output
  // capture: a crash cannot fall between those three, so the node shows 'pipe-pane' (launch.ts).
  'launch:session',
  'launch:release',
  'cleanup:tombstone',
  'cleanup:stop',
  'cleanup:session',
  'cleanup:flush',
  'cleanup:archive',
  'cleanup:prompt',
  'cleanup:workspace',
  'cleanup:record',
] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

const armedBy = process.env[CRASH_FILE_ENV] || undefined;

export function crashPoint(step: CrashPoint): void {
  if (!armedBy) return;
  let armed: string;
  try {
    armed = readFileSync(armedBy, 'utf8').trim();
  } catch {
    return; // not armed now
  }
  if (armed !== step) return;
  unlinkSync(armedBy);
  process.kill(process.pid, 'SIGKILL');
}
