/**
 * Agents that orchestrate agents, end to end (real control plane, kube-controller-manager's garbage
 * collector, controller, sidecars, tmux): the agent's command is a scripted MCP client driving
 * `agent-operator mcp` on stdio; it spawns, reads and stops children through its node and the
 * controller, within spec.children, and everything it started ends and is cleaned up.
 */
import assert from 'node:assert/strict';
import { readFile, readlink, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import type { Agent } from '../../src/api/agent.js';
import { PARENT_LABEL, ROOT_LABEL } from '../../src/api/constants.js';
import { ownCgroup } from '../../src/sidecar/runtime/cgroup.js';
import { findMarkerProcesses } from '../../src/sidecar/runtime/procfs.js';
import { readSandboxUid } from '../../src/sidecar/runtime/uids.js';
import { workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import { createTestNamespace, kubectl, waitFor } from '../support/cluster.js';
import type { Step, ToolResult } from '../support/mcpScript.js';
import { agents, archivedOutput, assertNodeClean, assertNothingLeft, createAgent, patchSpec, useStack, waitForAgent, waitForCleanedUp, type AgentObj } from '../support/stack.js';

const SCRIPT = fileURLToPath(new URL('../support/mcpScript.js', import.meta.url));
const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

/**
 * The agent's `agent-operator mcp` process as the host sees it (judged from outside, as root):
 * its real uid, its cgroup, its namespaces, and whether paths exist in its view of the filesystem.
 */
async function mcpServerOf(root: string, agentUid: string) {
  for (const p of await findMarkerProcesses(root, agentUid)) {
    const argv = (await readFile(`/proc/${p.pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
    if (argv.at(-1) !== 'mcp' || argv.at(-2) !== CLI) continue;
    const status = await readFile(`/proc/${p.pid}/status`, 'utf8');
    const ns = async (kind: string) => [await readlink(`/proc/${p.pid}/ns/${kind}`), await readlink(`/proc/self/ns/${kind}`)];
    return {
      pid: p.pid,
      uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]),
      cgroup: ownCgroup(await readFile(`/proc/${p.pid}/cgroup`, 'utf8')),
      user: await ns('user'),
      mnt: await ns('mnt'),
      sees: (path: string) => exists(`/proc/${p.pid}/root${path}`),
    };
  }
  return undefined;
}

/** An Agent whose command is the scripted MCP client following `plan`. */
const scripted = (plan: Step[], spec: Partial<Agent['spec']> = {}): Partial<Agent['spec']> => ({
  command: [process.execPath, SCRIPT],
  prompt: JSON.stringify(plan),
  ...spec,
});

/** The client's answers by step label. */
function answers(output: string): Map<string, ToolResult | string> {
  const out = new Map<string, ToolResult | string>();
  for (const line of output.split('\n')) {
    const m = /^<<< (\S+) (.*)$/.exec(line.trim());
    if (!m) continue;
    try {
      out.set(m[1]!, JSON.parse(m[2]!) as ToolResult);
    } catch {
      out.set(m[1]!, m[2]!);
    }
  }
  return out;
}

function result(all: Map<string, ToolResult | string>, label: string): { text: string; isError: boolean } {
  const r = all.get(label);
  assert.ok(r !== undefined, `no answer to step ${label}`);
  assert.ok(typeof r !== 'string', `step ${label}: ${r as string}`);
  return { text: r.content.map((c) => c.text).join('\n'), isError: r.isError === true };
}

const sleeper = (line: string) => ['sh', '-c', `echo ${line}; agent-operator report --status working --progress 50 --message halfway; sleep 120`];

describe('child agents through MCP', () => {
  const stack = useStack('kids');

  it('spawns children up to each limit, is refused past it, reads, stops, completes; bad input changes nothing', async (t) => {
    const ns = await createTestNamespace(t, 'kids-limits');
    const child = (name: string, command: string[]) => ({ tool: 'spawn_child_agent', label: `spawn-${name}`, args: { name, prompt: `task ${name}`, command, cleanup: { gracePeriodSeconds: 2 } } });
    const plan: Step[] = [
      { tool: 'update_agent_progress', label: 'progress', args: { status: 'working', progress: 10, message: 'fanning out' } },
      { ...child('a', sleeper('child-a-says-hi')) },
      { ...child('b', sleeper('child-b-ready')) },
      { ...child('c', ['sh', '-c', 'echo c-out; echo c-more']) },
      { tool: 'get_child_agents', label: 'list-a-working', args: {}, until: '"progress": 50' },
      { tool: 'get_agent_output', label: 'output-a', args: { name: 'a', tail: 5, grep: 'says' }, until: 'child-a-says-hi' },
      { tool: 'stop_child_agent', label: 'stop-b', args: { name: 'b', reason: 'enough of b' } },
      { tool: 'get_child_agents', label: 'list-b-stopped', args: {}, until: '"reason": "Stopped"' },
      { ...child('c', ['sh', '-c', 'echo c-out; echo c-more']), label: 'spawn-c-again' },
      { ...child('c', ['sh', '-c', 'echo c-out; echo c-more']), label: 'spawn-c-retried' },
      { ...child('d', ['true']) },
      { tool: 'get_agent_output', label: 'output-c', args: { name: 'lead-c' }, until: '"source": "archive"', timeoutMs: 90_000 },
      { tool: 'spawn_child_agent', label: 'bad-spawn', args: { name: 'Bad Name!', prompt: 'x', command: [], env: [{ name: 'AGENT_REPORT_TOKEN', value: 'x' }] } },
      { tool: 'get_agent_output', label: 'bad-output', args: { name: 'nobody', tail: 0 } },
      { tool: 'get_agent_output', label: 'not-a-child', args: { name: 'nobody' } },
      { tool: 'no_such_tool', label: 'bad-tool', args: {} },
      { tool: 'get_child_agents', label: 'list-final', args: {} },
      { tool: 'update_agent_progress', label: 'complete', args: { status: 'completed', message: 'children done' } },
    ];
    await createAgent(ns, 'lead', scripted(plan, { children: { maxTotal: 3, maxConcurrent: 2, maxDepth: 1 }, completionChecks: { minDurationSeconds: 1 } }));
    const lead = await waitForCleanedUp(ns, 'lead', 240_000);
    const out = await archivedOutput(lead);
    const all = answers(out);
    assert.match(out, /<<< tools update_agent_progress,report_agent_finding,spawn_child_agent,get_child_agents,get_agent_output,stop_child_agent/);

    for (const waited of ['list-a-working', 'output-a', 'list-b-stopped', 'output-c']) assert.equal(result(all, waited).isError, false, waited);
    assert.equal(result(all, 'spawn-a').isError, false, result(all, 'spawn-a').text);
    assert.match(result(all, 'spawn-a').text, /"name": "lead-a"/);
    assert.equal(result(all, 'spawn-b').isError, false);
    // Two active: the third is refused naming the limit.
    assert.equal(result(all, 'spawn-c').isError, true);
    assert.match(result(all, 'spawn-c').text, /refused: spec\.children\.maxConcurrent: .*2 children are active/);
    assert.match(result(all, 'output-a').text, /"source": "running"[\s\S]*child-a-says-hi/);
    assert.doesNotMatch(result(all, 'output-a').text, /halfway/, 'grep kept only matching lines');
    assert.match(result(all, 'stop-b').text, /"stopRequested": true/);
    // b stopped: a slot is free, and asking again for c is judged afresh.
    assert.equal(result(all, 'spawn-c-again').isError, false, result(all, 'spawn-c-again').text);
    assert.equal(result(all, 'spawn-c-retried').isError, false, 'a retried spawn answers with the same child');
    assert.match(result(all, 'spawn-c-retried').text, /"name": "lead-c"/);
    assert.match(result(all, 'spawn-d').text, /refused: spec\.children\.maxTotal: spec\.children\.maxTotal is 3 and 3 children were created/);
    assert.match(result(all, 'output-c').text, /"source": "archive"[\s\S]*c-out[\s\S]*c-more/);
    assert.match(result(all, 'bad-spawn').text, /invalid input for spawn_child_agent: .*command: .*name: must be lower case/);
    assert.match(result(all, 'bad-spawn').text, /env\.0\.name: name must not be one of the variables the platform sets/);
    assert.match(result(all, 'bad-output').text, /tail: must be an integer from 1 to 1000/);
    assert.match(result(all, 'not-a-child').text, /'nobody' is not a child of lead \(its children: lead-a, lead-b, lead-c\)/);
    assert.match(result(all, 'bad-tool').text, /unknown tool 'no_such_tool'/);
    for (const label of ['spawn-c', 'spawn-d', 'bad-spawn', 'bad-output', 'not-a-child', 'bad-tool']) assert.equal(result(all, label).isError, true, label);

    // The parent completed; what it started is gone, each as any Agent.
    assert.deepEqual([lead.status?.phase, lead.status?.reason], ['Completed', 'AgentCompleted'], 'its children ending (c completed, b stopped) ended nothing of it');
    assert.equal(lead.status?.conditions?.find((c) => c.type === 'CompletionVerified')?.status, 'True');
    const kids = (await agents().list({ namespace: ns, labelSelector: `${PARENT_LABEL}=lead` })).items.map((a) => a.metadata!.name!).sort();
    assert.deepEqual(kids, ['lead-a', 'lead-b', 'lead-c'], 'bad input and refusals created nothing');
    const a = await waitForCleanedUp(ns, 'lead-a');
    const b = await waitForCleanedUp(ns, 'lead-b');
    const c = await waitForCleanedUp(ns, 'lead-c');
    assert.deepEqual([a.status?.phase, a.status?.reason], ['Terminated', 'ParentStopped'], 'the running child stopped when its parent ended');
    assert.deepEqual([b.status?.phase, b.status?.reason, b.status?.message], ['Terminated', 'Stopped', 'enough of b']);
    assert.deepEqual([c.status?.phase, c.status?.reason], ['Completed', 'Exited']);
    for (const k of [a, b, c]) {
      assert.equal(k.metadata?.labels?.[ROOT_LABEL], 'lead');
      assert.equal(k.status?.nodeName, lead.status?.nodeName, "children run on their parent's node");
      const owner = (k.metadata as { ownerReferences?: { uid: string; controller?: boolean; blockOwnerDeletion?: boolean }[] }).ownerReferences?.[0];
      assert.deepEqual([owner?.uid, owner?.controller, owner?.blockOwnerDeletion], [lead.metadata?.uid, true, true]);
      assert.deepEqual(k.spec.children, { maxTotal: 3, maxConcurrent: 2, maxDepth: 0 }, 'inherited, one generation less');
      await assertNothingLeft(stack(), k);
    }
    // The parent's mirror, Job-like counts.
    const mirror = await waitForAgent(ns, 'lead', (p) => p.status?.children?.active === 0, 'to count no active child');
    assert.deepEqual([mirror.status?.children?.succeeded, mirror.status?.children?.failed], [1, 2]);
    assert.deepEqual(
      mirror.status?.children?.refused?.map((r) => [r.name, r.field]),
      [['lead-d', 'spec.children.maxTotal']],
    );
    assert.equal(mirror.status?.spawnRequests?.length, 4, 'a, b, c (asked three times) and d');
    const listed = await kubectl(['-n', ns, 'get', 'ag', '-l', `${ROOT_LABEL}=lead`]);
    assert.equal(listed.exitCode, 0, listed.stderr);
    assert.match(listed.stdout, /lead-a\s+Terminated/);
    await assertNothingLeft(stack(), lead);
  });

  it('a grandchild past maxDepth is refused; stopping the root stops and cleans the whole tree', async (t) => {
    const ns = await createTestNamespace(t, 'kids-tree');
    const leafPlan: Step[] = [
      { tool: 'spawn_child_agent', label: 'spawn-deeper', args: { name: 'deeper', prompt: 'x', command: ['true'] } },
      { tool: 'update_agent_progress', label: 'leaf-working', args: { status: 'working', progress: 1, message: 'leaf waiting' } },
    ];
    const midPlan: Step[] = [{ tool: 'spawn_child_agent', label: 'spawn-leaf', args: { name: 'leaf', ...scripted(leafPlan) } }];
    const rootPlan: Step[] = [{ tool: 'spawn_child_agent', label: 'spawn-mid', args: { name: 'mid', ...scripted(midPlan), cleanup: { gracePeriodSeconds: 2 } } }];
    await createAgent(ns, 'root', scripted(rootPlan, { children: { maxTotal: 2, maxConcurrent: 2, maxDepth: 2 }, cleanup: { gracePeriodSeconds: 2 } }));

    const leaf = await waitForAgent(ns, 'root-mid-leaf', (a) => a.status?.reportedState === 'working', 'to report (after its refused spawn)', 120_000);
    assert.deepEqual(leaf.spec.children, { maxTotal: 2, maxConcurrent: 2, maxDepth: 0 });
    assert.equal(leaf.metadata?.labels?.[ROOT_LABEL], 'root');
    assert.equal(leaf.metadata?.labels?.[PARENT_LABEL], 'root-mid');
    const refusedOnLeaf = await waitForAgent(ns, 'root-mid-leaf', (a) => (a.status?.children?.refused?.length ?? 0) > 0, 'to record the refusal');
    assert.equal(refusedOnLeaf.status?.children?.refused?.[0]?.field, 'spec.children.maxDepth');
    assert.equal(await agents().find({ namespace: ns, name: 'root-mid-leaf-deeper' }), undefined);

    // As an admin would stop the root: the cascade takes the tree down.
    await patchSpec(ns, 'root', { stop: true, stopReason: 'tree no longer needed' });
    const ended: AgentObj[] = [];
    for (const name of ['root', 'root-mid', 'root-mid-leaf']) ended.push(await waitForCleanedUp(ns, name, 120_000));
    assert.deepEqual(
      ended.map((a) => [a.metadata?.name, a.status?.phase, a.status?.reason]),
      [
        ['root', 'Terminated', 'Stopped'],
        ['root-mid', 'Terminated', 'ParentStopped'],
        ['root-mid-leaf', 'Terminated', 'ParentStopped'],
      ],
    );
    assert.match(await archivedOutput(ended[2]!), /<<< spawn-deeper .*refused: spec\.children\.maxDepth/);
    for (const a of ended) await assertNothingLeft(stack(), a);
  });

  it('deleting a parent: the garbage collector deletes its children, each cleaned up by the finalizer', async (t) => {
    const ns = await createTestNamespace(t, 'kids-delete');
    const plan: Step[] = [{ tool: 'spawn_child_agent', label: 'spawn-w', args: { name: 'w', prompt: 'wait', command: sleeper('w-up'), cleanup: { gracePeriodSeconds: 2 } } }];
    await createAgent(ns, 'boss', scripted(plan, { children: { maxTotal: 1, maxConcurrent: 1, maxDepth: 1 }, cleanup: { gracePeriodSeconds: 2 } }));
    const w = await waitForAgent(ns, 'boss-w', (a) => a.status?.reportedState === 'working', 'to run', 120_000);

    // The spawn went through the parent's MCP server, which runs in the parent's sandbox as the stack
    // gives it: its own uid, its cgroup leaf, its own user and mount namespaces, the installation
    // visible and the node's archive not.
    const boss = await waitForAgent(ns, 'boss', (a) => a.status?.phase === 'Running' || a.status?.phase === 'Working', 'to run');
    const node = stack().nodes.find((n) => n.name === boss.status?.nodeName)!;
    const bossUid = boss.metadata!.uid!;
    const server = await waitFor(() => mcpServerOf(node.root, bossUid), { timeoutMs: 10_000, what: "the parent's agent-operator mcp process", intervalMs: 200 });
    const sandboxUid = await readSandboxUid(workspacePaths(node.root, bossUid));
    assert.ok(sandboxUid !== undefined && sandboxUid > 0 && sandboxUid !== process.getuid?.(), `sandbox uid ${sandboxUid}`);
    assert.equal(server.uid, sandboxUid, "the MCP server runs as the agent's own uid");
    assert.match(server.cgroup ?? '', new RegExp(`/${node.agentsCgroup}/${bossUid}$`), "in the agent's cgroup leaf");
    assert.notEqual(server.user[0], server.user[1], 'in its own user namespace');
    assert.notEqual(server.mnt[0], server.mnt[1], 'in its own mount namespace');
    assert.equal(await server.sees(CLI), true, 'the installation is visible to it');
    assert.equal(await server.sees(node.archiveDir), false, "the node's archive is not");
    const r = await kubectl(['-n', ns, 'delete', 'agent', 'boss', '--wait=false']);
    assert.equal(r.exitCode, 0, r.stderr);
    await waitFor(async () => (await agents().find({ namespace: ns, name: 'boss-w' })) === undefined, {
      timeoutMs: 120_000,
      what: 'the child to be deleted by the garbage collector',
      intervalMs: 200,
    });
    // Its cleanup record was written before its finalizer was released: the node holds nothing of it.
    await assertNodeClean(stack(), w.metadata!.uid!);
  });

  it('a parent past its deadline stops its child (ParentStopped); an Agent without spec.children may spawn none', async (t) => {
    const ns = await createTestNamespace(t, 'kids-deadline');
    const plan: Step[] = [{ tool: 'spawn_child_agent', label: 'spawn-w', args: { name: 'w', prompt: 'wait', command: sleeper('w-up'), cleanup: { gracePeriodSeconds: 2 } } }];
    const loner: Step[] = [{ tool: 'spawn_child_agent', label: 'spawn-x', args: { name: 'x', prompt: 'x', command: ['true'] } }];
    const deadline = { activeDeadlineSeconds: 20, cleanup: { gracePeriodSeconds: 2 } };
    await createAgent(ns, 'timed', scripted(plan, { children: { maxTotal: 1, maxConcurrent: 1, maxDepth: 1 }, ...deadline }));
    await createAgent(ns, 'loner', scripted(loner, deadline));
    // Created before its parent's deadline (started or not, it is stopped with it).
    await waitFor(() => agents().find({ namespace: ns, name: 'timed-w' }), { timeoutMs: 60_000, what: 'the child to be created', intervalMs: 200 });
    const [timed, w, alone] = [await waitForCleanedUp(ns, 'timed', 120_000), await waitForCleanedUp(ns, 'timed-w', 120_000), await waitForCleanedUp(ns, 'loner', 120_000)];
    assert.deepEqual([timed.status?.phase, timed.status?.reason], ['Terminated', 'DeadlineExceeded']);
    assert.deepEqual([w.status?.phase, w.status?.reason], ['Terminated', 'ParentStopped']);
    assert.match(w.status?.message ?? '', /parent timed ended \(Terminated, DeadlineExceeded\)/);
    const refused = result(answers(await archivedOutput(alone)), 'spawn-x');
    assert.equal(refused.isError, true);
    assert.match(refused.text, /refused: spec\.children: loner has no spec\.children: it may not spawn children/);
    assert.equal(alone.status?.children?.refused?.[0]?.field, 'spec.children');
    assert.deepEqual((await agents().list({ namespace: ns, labelSelector: `${PARENT_LABEL}=loner` })).items, []);
    for (const a of [timed, w, alone]) await assertNothingLeft(stack(), a);
  });

  it('completion checks: a completion reported at once and without progress is flagged, the outcome stays Completed', async (t) => {
    const ns = await createTestNamespace(t, 'kids-checks');
    await createAgent(ns, 'hasty', { command: ['sh', '-c', 'agent-operator report --status completed --message "done already"; sleep 30'] });
    const a = await waitForCleanedUp(ns, 'hasty');
    assert.equal(a.status?.phase, 'Completed');
    const c = a.status?.conditions?.find((x) => x.type === 'CompletionVerified');
    assert.equal(c?.status, 'False');
    assert.equal(c?.reason, 'CompletedTooFast,TooFewProgressReports');
    assert.match(c?.message ?? '', /under spec\.completionChecks\.minDurationSeconds \(10s\).*0 progress report\(s\)/);
    await waitFor(
      async () => {
        const d = await kubectl(['-n', ns, 'describe', 'agent', 'hasty']);
        return d.exitCode === 0 && /Warning\s+CompletedTooFast,TooFewProgressReports/.test(d.stdout);
      },
      { timeoutMs: 20_000, what: 'the Warning Event in kubectl describe', intervalMs: 500 },
    );
    await assertNothingLeft(stack(), a);
  });
});
