/**
 * The periodic look at running agents, as the kubelet's PLEG relists containers: one `tmux
 * list-panes` and one stat per agent per tick, and a reconcile only for an agent whose session
 * changed (died, vanished) or whose output moved enough to matter for its idle timeout, plus every
 * agent now and then as a resync. Exits are also seen at once through inotify (exitWatch.ts); this
 * is the net under it, and what notices a session lost with its tmux server.
 */
import type { Logger } from 'pino';
import type { Agent } from '../api/agent.js';
import { describeError } from '../kube/errors.js';
import { objectKey } from '../kube/informer.js';
import type { KubeObject } from '../kube/resources.js';
import type { AgentRecords } from './agentRecord.js';
import { outputTimeResolutionMs } from './decide.js';
import type { RelistProgress } from './progress.js';
import { FileOperationTimeoutError } from './runtime/boundedFs.js';
import { statOutput } from './runtime/capture.js';
import { stallPoint } from './runtime/stallPoint.js';
import { listPanes, sessionNameFor, type PaneInfo } from './runtime/tmux.js';
import { isAgentUid, workspacePaths } from './runtime/workspace.js';

/** What one tick sees of an agent on the node. */
export interface Glimpse {
  /** The agent's session pane: running, dead (remain-on-exit), or not there. */
  pane: 'alive' | 'dead' | 'none';
  /** When the output capture last wrote (ms; capture.ts statOutput), 0 while there is none. */
  outputMtimeMs: number;
}

/**
 * Whether this tick should reconcile the agent (pure). `last` is what the tick that last
 * reconciled it saw; `outputResolutionMs` is how far output must move before it is worth a status
 * write (decide.ts: outputTimeResolutionMs).
 */
export function relistWants(last: Glimpse | undefined, now: Glimpse, outputResolutionMs: number, resync: boolean): boolean {
  if (resync || !last) return true;
  if (now.pane !== last.pane) return true;
  return now.outputMtimeMs - last.outputMtimeMs >= outputResolutionMs;
}

export interface RelisterOptions {
  root: string;
  records: AgentRecords;
  /** The Agents whose cleanup the node has yet to record. */
  active: () => readonly (Agent & KubeObject)[];
  enqueue: (key: string) => void;
  progress: RelistProgress;
  logger: Logger;
  /** Called on every resync tick (RESYNC_TICKS). */
  onResync: () => void;
}

/** Every this many relist ticks, every running agent is reconciled, changed or not. */
const RESYNC_TICKS = 30;

/** The relist loop: one pass a tick, never two at once; each pass completed or failed is told to `progress`. */
export class Relister {
  private ticks = 0;
  private polling = false;

  constructor(private readonly o: RelisterOptions) {}

  async poll(): Promise<void> {
    if (this.polling) return; // a slow tick is not overlapped by the next
    this.polling = true;
    try {
      await this.relist(this.ticks++ % RESYNC_TICKS === 0);
      this.o.progress.passed(Date.now());
    } catch (err) {
      this.o.progress.failed(describeError(err));
      throw err;
    } finally {
      this.polling = false;
    }
  }

  private async relist(resync: boolean): Promise<void> {
    if (resync) this.o.onResync();
    await stallPoint('relist');
    let panes: Map<string, PaneInfo> | undefined;
    try {
      panes = new Map((await listPanes(this.o.root)).map((p) => [p.sessionName, p]));
    } catch (err) {
      this.o.logger.warn({ err: describeError(err) }, 'listing the sessions failed; looking at every agent');
    }
    for (const a of this.o.active()) {
      const uid = a.metadata?.uid;
      if (!uid || !isAgentUid(uid)) continue;
      const pane = panes?.get(sessionNameFor(uid));
      const now: Glimpse = {
        pane: pane ? (pane.dead ? 'dead' : 'alive') : 'none',
        outputMtimeMs: await statOutput(workspacePaths(this.o.root, uid).dir).then(
          (st) => st?.mtimeMs ?? 0,
          (err: unknown) => {
            if (err instanceof FileOperationTimeoutError) throw err; // a pass that did not see everything
            return 0;
          },
        ),
      };
      const r = this.o.records.ensure(uid);
      if (panes === undefined || relistWants(r.glimpse, now, outputTimeResolutionMs(a.spec.idleTimeoutSeconds), resync)) {
        r.glimpse = now;
        this.o.enqueue(objectKey(a));
      }
    }
  }
}
