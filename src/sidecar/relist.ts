/**
 * The periodic look at running agents, as the kubelet's PLEG relists containers: one `tmux
 * list-panes` and one stat per agent per tick, and a reconcile only for an agent whose session
 * changed (died, vanished) or whose output moved enough to matter for its idle timeout, plus every
 * agent now and then as a resync. Exits are also seen at once through inotify (exitWatch.ts); this
 * is the net under it, and what notices a session lost with its tmux server.
 */

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
