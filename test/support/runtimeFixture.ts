/**
 * A simulated node for the runtime integration tests: a temp root whose path is deliberately hostile
 * (spaces, quotes, `$(...)`, tmux `#{}`, strftime `%`, a trailing `;`), its own tmux server on
 * `<root>/tmux.sock`, an archive dir and a bin dir with a fake `agent-operator`. Everything is torn
 * down after the test, also when it fails: marker processes, the tmux server, the temp dir.
 */
import { randomUUID } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { pino, type Logger } from 'pino';
import { launch, type LaunchOptions, type LaunchResult } from '../../src/sidecar/runtime/launch.js';
import { observeSession, type SessionObservation } from '../../src/sidecar/runtime/observe.js';
import { groupByAgent, listProcesses, sendSignal } from '../../src/sidecar/runtime/procfs.js';
import { killServer } from '../../src/sidecar/runtime/tmux.js';
import { waitFor } from '../../src/sidecar/runtime/wait.js';
import { workspacePaths, type WorkspacePaths } from '../../src/sidecar/runtime/workspace.js';
import type { NodeSandbox } from '../../src/sidecar/runtime/sandbox.js';
import { testSandbox } from './sandbox.js';

export interface NodeFixture {
  root: string;
  archiveDir: string;
  binDir: string;
  /** The real sandbox (bwrap), as the sidecar runs it by default. */
  sandbox: NodeSandbox;
  logger: Logger;
  paths(uid: string): WorkspacePaths;
  /** Launches a fresh agent (new UID unless given) with test defaults. */
  launch(o: Partial<LaunchOptions> & Pick<LaunchOptions, 'command'>): Promise<LaunchResult & { uid: string }>;
  waitFor(uid: string, what: string, pred: (o: SessionObservation) => boolean, timeoutMs?: number): Promise<SessionObservation>;
  waitExited(uid: string, timeoutMs?: number): Promise<SessionObservation>;
  /** Waits until a process in the session has written a complete line to a file; returns the content. */
  waitForLine(path: string, timeoutMs?: number): Promise<string>;
}

const logger = pino({ level: process.env.LOG_LEVEL ?? 'silent' });

export async function nodeFixture(t: TestContext): Promise<NodeFixture> {
  const root = await mkdtemp(join(tmpdir(), `ao-rt '"$(x) #{y} %H;`));
  t.after(async () => {
    // Anything a test left running on this node: marker processes (this root's only), then the server.
    for (const procs of groupByAgent(await listProcesses(), root).values()) for (const p of procs) sendSignal(p.pid, 'SIGKILL');
    await killServer(root);
    // An output capture sees its end when the server goes and writes its last (empty) segment file
    // as it ends, a moment later: a directory emptied meanwhile is emptied again.
    await rm(root, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  });
  const archiveDir = join(root, 'archive');
  const binDir = join(root, 'bin');
  await mkdir(binDir);
  // Proves binDir comes first in PATH: the session finds this `agent-operator`.
  await writeFile(join(binDir, 'agent-operator'), '#!/bin/sh\nprintf "fake agent-operator %s\\n" "$*" > ao-called\n');
  await chmod(join(binDir, 'agent-operator'), 0o755);

  const sandbox = await testSandbox(t);
  const fx: NodeFixture = {
    root,
    archiveDir,
    binDir,
    sandbox,
    logger,
    paths: (uid) => workspacePaths(root, uid),
    async launch(o) {
      const uid = o.uid ?? randomUUID();
      const r = await launch({ root, uid, namespace: 'team-a', name: `agent-${uid.slice(0, 8)}`, env: {}, prompt: 'the prompt\n', binDir, sandbox, logger, ...o });
      return { ...r, uid };
    },
    waitFor: (uid, what, pred, timeoutMs = 10_000) =>
      waitFor(
        async () => {
          const o = await observeSession(root, uid);
          return pred(o) ? o : undefined;
        },
        { timeoutMs, what },
      ),
    waitExited: (uid, timeoutMs) => fx.waitFor(uid, 'the agent to exit', (o) => o.exited, timeoutMs),
    waitForLine: (path, timeoutMs = 10_000) =>
      waitFor(
        async () => {
          const text = await readFile(path, 'utf8').catch(() => '');
          return text.endsWith('\n') ? text : undefined;
        },
        { timeoutMs, what: `a line in ${path}` },
      ),
  };
  return fx;
}
