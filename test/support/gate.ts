/**
 * Agents that wait at a gate: each one records its start in a shared directory (one line per start,
 * so a second launch of the same Agent shows as a second line), then waits until the test opens its
 * gate, then runs what the test gave it. Lets a test hold agents running across a crash or restart
 * and let them end exactly when it wants.
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before } from 'node:test';
import type { Agent } from '../../src/api/agent.js';
import { errnoOf } from '../../src/sidecar/runtime/files.js';
import { waitFor } from './cluster.js';
import type { Stack } from '../../src/dev/stack.js';
import { hostPidOfAgentNamed } from './sandbox.js';
import { waitForCleanedUp, type AgentObj } from './stack.js';

/**
 * A Gates for the suite (before), removed after it: in the stack's shared directory, the one
 * place sandboxed agents and the test both see (declare it after useStack).
 */
export function useGates(stack: () => Stack): () => Gates {
  let gates: Gates | undefined;
  before(async () => {
    gates = await Gates.create(stack().sharedDir);
  });
  after(() => gates?.remove());
  return () => {
    if (!gates) throw new Error('gates not created');
    return gates;
  };
}

const GATE_ENV = 'GATE_DIR';

export class Gates {
  private constructor(readonly dir: string) {}

  static async create(parent: string): Promise<Gates> {
    const dir = await mkdtemp(join(parent, 'gates-'));
    await chmod(dir, 0o1777); // every agent's own uid records its starts here
    return new Gates(dir);
  }

  /**
   * A spec whose command runs `prelude`, appends to `<name>.starts`, waits for `<name>.go`, then runs
   * `then` (/bin/sh snippets; default `exit 0`). `$AGENT_NAME` names the Agent inside the session.
   */
  spec(then = 'exit 0', extra: Partial<Agent['spec']> = {}, prelude = ':'): Partial<Agent['spec']> {
    // `$$$$`: the command's $(VAR) expansion turns `$$` into `$`, so the shell sees `$$` (its pid).
    const script = [
      prelude,
      // Writable by any uid: a second start (with another uid) must still be able to append.
      `(umask 0; echo "started $$$$" >> "$${GATE_ENV}/$AGENT_NAME.starts")`,
      `until [ -e "$${GATE_ENV}/$AGENT_NAME.go" ]; do sleep 0.1; done`,
      then,
    ].join('\n');
    return { ...extra, command: ['sh', '-c', script], env: [{ name: GATE_ENV, value: this.dir }, ...(extra.env ?? [])] };
  }

  /** Lets the agent named `name` go on past its gate. */
  async open(name: string): Promise<void> {
    await writeFile(join(this.dir, `${name}.go`), '');
  }

  /** How many times the agent named `name` was started (0 before its first start). */
  async starts(name: string): Promise<number> {
    return (await this.pids(name)).length;
  }

  /**
   * Waits for the agent's first start to be recorded (a Running status can come first) and returns
   * its host pid (it records the pid of its PID namespace).
   */
  async pid(name: string): Promise<number> {
    const [pid] = await waitFor(
      async () => {
        const pids = await this.pids(name);
        return pids.length > 0 ? pids : undefined;
      },
      { timeoutMs: 15_000, what: `agent ${name} to record its start` },
    );
    return hostPidOfAgentNamed(name, pid!);
  }

  /** The pid of the agent's command (the shell that waits at the gate), once per start. */
  async pids(name: string): Promise<number[]> {
    try {
      const lines = (await readFile(join(this.dir, `${name}.starts`), 'utf8')).split('\n').filter(Boolean);
      return lines.map((l) => Number(/^started (\d+)$/.exec(l)?.[1] ?? NaN));
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return [];
      throw err;
    }
  }

  /**
   * Waits for each Agent to finish and be cleaned up, and checks it ended as `phase` after exactly one
   * start, with the start time and UID it had in `running`. Returns the finished Agents.
   */
  async assertFinishedOnce(running: readonly AgentObj[], phase: string): Promise<AgentObj[]> {
    const done: AgentObj[] = [];
    for (const r of running) {
      const name = r.metadata!.name!;
      const a = await waitForCleanedUp(r.metadata!.namespace!, name);
      assert.equal(a.status?.phase, phase, `${name}: ${a.status?.reason}: ${a.status?.message}`);
      assert.equal(await this.starts(name), 1, `${name} was started more than once`);
      assert.equal(a.status?.startTime, r.status?.startTime, `${name}: startTime changed`);
      assert.equal(a.metadata?.uid, r.metadata?.uid);
      done.push(a);
    }
    return done;
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
