/**
 * Notices an agent's exit the moment its launcher writes `exit-code`, through inotify on the
 * workspace, instead of at the next poll. The poll stays as the safety net (a missed event, a
 * watch that could not be set up): this only makes cleanup start sooner.
 */
import { watch, type FSWatcher } from 'node:fs';
import type { Logger } from 'pino';
import { join } from 'node:path';
import { errnoOf, exists } from './runtime/files.js';
import { workspacePaths } from './runtime/workspace.js';

const EXIT_FILE = 'exit-code';

export class ExitWatches {
  private readonly watchers = new Map<string, FSWatcher>();

  constructor(
    private readonly root: string,
    private readonly onExit: (uid: string) => void,
    private readonly log: Logger,
  ) {}

  /**
   * Watches the workspace of `uid`, once; a workspace that is not there is not watched. An exit
   * written before the watch began (a command quicker than its launch's last steps) is reported too.
   */
  watch(uid: string): void {
    if (this.watchers.has(uid)) return;
    const dir = workspacePaths(this.root, uid).dir;
    let w: FSWatcher;
    try {
      w = watch(dir, { persistent: false }, (_event, file) => {
        if (file === EXIT_FILE) this.onExit(uid);
      });
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') this.log.warn({ uid, err: String(err) }, 'cannot watch the workspace; exits are noticed by polling');
      return;
    }
    // The workspace removed under it (cleanup, sweep): the watch ends, nothing to report.
    w.on('error', () => this.unwatch(uid));
    this.watchers.set(uid, w);
    void exists(join(dir, EXIT_FILE)).then(
      (exited) => {
        if (exited && this.watchers.get(uid) === w) this.onExit(uid);
      },
      () => undefined, // the poll still sees it
    );
  }

  unwatch(uid: string): void {
    this.watchers.get(uid)?.close();
    this.watchers.delete(uid);
  }

  /** How many workspaces are watched (metrics, tests). */
  get size(): number {
    return this.watchers.size;
  }

  closeAll(): void {
    for (const uid of [...this.watchers.keys()]) this.unwatch(uid);
  }
}
