/**
 * A scripted MCP client, run as an agent's command: it starts `agent-operator mcp` (from the session's
 * PATH), speaks newline-delimited JSON-RPC on its stdin as any client does (initialize,
 * notifications/initialized, tools/list, tools/call), follows the plan in $AGENT_PROMPT_FILE and
 * prints every answer to its output, where tests read it (`<<< <step> <result JSON>`).
 *
 * A plan is a JSON list of steps: `{ "tool": name, "args": {...}, "until": "text", "timeoutMs": n }`
 * (with `until`: repeated every second until the result's text contains it) or `{ "sleepMs": n }`.
 * After the plan it keeps its server, as an agent CLI does for its whole session, until cleanup ends both.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

export type Step = { tool: string; args?: Record<string, unknown>; until?: string; timeoutMs?: number; label?: string } | { sleepMs: number };

export interface ToolResult {
  content: { type: string; text: string }[];
  isError?: boolean;
}

const MAX_WAIT_MS = 90_000;
/** Between repeats of an `until` step: gentle on the node's report channel, as a polling agent should be. */
const REPEAT_MS = 1_000;

async function main(): Promise<void> {
  const plan = JSON.parse(readFileSync(process.env.AGENT_PROMPT_FILE ?? '', 'utf8')) as Step[];
  const server = spawn('agent-operator', ['mcp'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const pending = new Map<number, (msg: { result?: unknown; error?: unknown }) => void>();
  createInterface({ input: server.stdout }).on('line', (line) => {
    const msg = JSON.parse(line) as { id?: number; result?: unknown; error?: unknown };
    if (msg.id !== undefined) pending.get(msg.id)?.(msg);
  });
  let nextId = 1;
  const request = (method: string, params: unknown): Promise<{ result?: unknown; error?: unknown }> => {
    const id = nextId++;
    server.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to ${method} within ${MAX_WAIT_MS} ms`)), MAX_WAIT_MS);
      pending.set(id, (msg) => {
        clearTimeout(timer);
        resolve(msg);
      });
    });
  };

  const init = await request('initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'scripted', version: '1' } });
  console.log(`<<< initialize ${JSON.stringify(init.result)}`);
  server.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })}\n`);
  const tools = (await request('tools/list', {})).result as { tools: { name: string }[] };
  console.log(`<<< tools ${tools.tools.map((t) => t.name).join(',')}`);

  for (const step of plan) {
    if ('sleepMs' in step) {
      await new Promise((r) => setTimeout(r, step.sleepMs));
      continue;
    }
    const label = step.label ?? step.tool;
    const deadline = Date.now() + (step.timeoutMs ?? 60_000);
    for (;;) {
      const answer = await request('tools/call', { name: step.tool, arguments: step.args ?? {} });
      const result = (answer.result ?? { content: [{ type: 'text', text: JSON.stringify(answer.error) }], isError: true }) as ToolResult;
      const text = result.content.map((c) => c.text).join('\n');
      if (step.until === undefined || text.includes(step.until)) {
        console.log(`<<< ${label} ${JSON.stringify(result)}`);
        break;
      }
      if (Date.now() >= deadline) {
        console.log(`<<< ${label} TIMEOUT waiting for ${JSON.stringify(step.until)}; last: ${JSON.stringify(result)}`);
        break;
      }
      await new Promise((r) => setTimeout(r, REPEAT_MS));
    }
  }
  console.log('PLAN DONE');
  // Whatever the plan's last step did, stay with the server until cleanup stops the session (as a real
  // agent would); a server that dies before that is a failure the output shows.
  server.once('exit', (code, signal) => console.log(`MCP SERVER EXITED ${code ?? signal}`));
  await new Promise((r) => setTimeout(r, MAX_WAIT_MS));
  server.stdin.end();
}

main().catch((err: unknown) => {
  console.log(`SCRIPT FAILED ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
