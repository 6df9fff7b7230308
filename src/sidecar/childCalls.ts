/**
 * The node's answers to an agent's calls about its children (spawn, list, output, stop): requests are
 * written onto the parent's status under its resourceVersion (retried on conflict, so two calls at
 * once both land), reads come from the node's cache and files. The node never creates or stops an
 * Agent itself: the controller does, from what is written here.
 */
import type { Agent } from '../api/agent.js';
import { isConflict } from '../kube/errors.js';
import { refOf, type KubeObject, type ResourceClient } from '../kube/resources.js';
import { type CallInput, type CallKind, type OutputAnswer, type SpawnAnswer, type StopAnswer } from '../report/protocol.js';
import { CallRefused } from '../report/server.js';
import { childrenAnswer, findChild, intakeSpawn, intakeStop, notAChild, tailLines, type Refusal } from './children.js';
import { findArchiveLocation, readManifest } from './runtime/archive.js';
import { archiveOutput, readOutputEnd, workspaceOutput } from './runtime/capture.js';
import { readAgentRecord, workspacePaths } from './runtime/workspace.js';

type AgentObj = Agent & KubeObject;

export interface ChildCallsOptions {
  nodeName: string;
  root: string;
  archiveDir: string;
  api: ResourceClient<AgentObj>;
  /** The Agent as the node's informer holds it. */
  cached: (key: string) => AgentObj | undefined;
}

const DEFAULT_TAIL = 100;
/** At most this much of the end of an output log is read for one answer. */
const OUTPUT_READ_BYTES = 1024 * 1024;
const WRITE_ATTEMPTS = 5;

export class ChildCalls {
  constructor(private readonly o: ChildCallsOptions) {}

  async answer<K extends CallKind>(key: string, kind: K, input: CallInput<K>): Promise<object> {
    const parent = this.o.cached(key);
    if (!parent) throw new CallRefused(503, "this agent is not in the node's cache yet; retry");
    switch (kind) {
      case 'spawn':
        return this.spawn(parent, input as CallInput<'spawn'>);
      case 'list':
        return childrenAnswer(parent);
      case 'output':
        return this.output(parent, input as CallInput<'output'>);
      case 'stop':
        return this.stop(parent, input as CallInput<'stop'>);
    }
    throw new CallRefused(404, `no such call: ${String(kind)}`);
  }

  // Request times in milliseconds: a refused spawn asked again within the same second is a new request.
  private async spawn(cached: AgentObj, input: CallInput<'spawn'>): Promise<SpawnAnswer> {
    return this.write(cached, (parent) => {
      const r = intakeSpawn(parent, input, new Date().toISOString());
      if ('refused' in r) return r;
      return { answer: { name: r.name, requestTime: r.requestTime }, ...(r.write ? { patch: { spawnRequests: r.write } } : {}) };
    });
  }

  private async stop(cached: AgentObj, input: CallInput<'stop'>): Promise<StopAnswer> {
    return this.write(cached, (parent) => {
      const r = intakeStop(parent, input, new Date().toISOString());
      if ('refused' in r) return r;
      return { answer: { name: r.name, stopRequested: true as const }, ...(r.write ? { patch: { stopRequests: r.write } } : {}) };
    });
  }

  /** Reads the parent fresh, decides, and writes under its resourceVersion; again on a conflict. */
  private async write<T>(cached: AgentObj, decide: (parent: AgentObj) => Refusal | { answer: T; patch?: Record<string, unknown> }): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const parent = await this.o.api.get(refOf(cached));
      if (parent.metadata?.uid !== cached.metadata?.uid) throw new CallRefused(409, "this agent's Agent no longer exists");
      const d = decide(parent);
      if ('refused' in d) throw new CallRefused(d.refused.status, d.refused.message);
      if (!d.patch) return d.answer;
      try {
        await this.o.api.patchStatus(refOf(parent), d.patch, { resourceVersion: parent.metadata?.resourceVersion });
        return d.answer;
      } catch (err) {
        if (!isConflict(err) || attempt >= WRITE_ATTEMPTS) throw err;
      }
    }
  }

  private async output(parent: AgentObj, q: CallInput<'output'>): Promise<OutputAnswer> {
    const child = findChild(parent, q.name);
    if (!child) throw new CallRefused(404, notAChild(parent, q.name));
    if (!child.uid) throw new CallRefused(404, `${child.name} is being created; it has no output yet`);
    if (child.nodeName && child.nodeName !== this.o.nodeName) {
      // Children are placed on their parent's node; one placed elsewhere is read there (kubectl, the archive).
      throw new CallRefused(409, `${child.name} runs on node ${child.nodeName}, not on this agent's node ${this.o.nodeName}; its output can only be read there`);
    }
    const tail = q.tail ?? DEFAULT_TAIL;
    const paths = workspacePaths(this.o.root, child.uid);
    const running = await readOutputEnd(await workspaceOutput(paths.dir, (await readAgentRecord(paths))?.output), OUTPUT_READ_BYTES);
    if (running) return { name: child.name, source: 'running', lines: tailLines(running.text, tail, q.grep, running.cut) };
    const archive = await findArchiveLocation(this.o.archiveDir, child.uid);
    const manifest = archive ? await readManifest(archive.dir) : undefined;
    const archived = archive ? await readOutputEnd(archiveOutput(archive.dir, manifest !== undefined && 'files' in manifest && manifest.output?.truncated === true), OUTPUT_READ_BYTES) : undefined;
    if (archived) return { name: child.name, source: 'archive', lines: tailLines(archived.text, tail, q.grep, archived.cut) };
    throw new CallRefused(404, `${child.name} has no output on this node yet (phase ${child.phase ?? 'Pending'})`);
  }
}
