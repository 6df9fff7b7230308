/**
 * `agent-operator mcp`: an MCP server on stdio for the agent in a session. Its tools report progress
 * and findings and spawn, read and stop child Agents, all through the session's report channel
 * (callReportChannel): the agent holds no API credential; its node records what it asks and the
 * controller acts on it within the Agent's spec.children.
 */
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { CallToolRequestSchema, ListToolsRequestSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { VERSION } from '../cmd/version.js';
import { callReportChannel, ChannelError } from '../report/cli.js';
import { acceptedResponseSchema, CALL_PATHS, describeIssues, findingSchema, REPORT_PATHS, statusReportSchema, CALL_SCHEMAS, type ChildrenAnswer, type SpawnAnswer } from '../report/protocol.js';
import { sleep } from '../kube/backoff.js';

export interface McpOptions {
  env?: NodeJS.ProcessEnv;
  /** How long spawn_child_agent waits for the controller's answer. */
  spawnTimeoutMs?: number;
  /** How soon it looks first; each later look waits twice as long, at most SPAWN_POLL_MAX_MS. */
  spawnPollMs?: number;
}

/** The longest pause between looks: a minute's wait costs the node's report channel a few dozen calls. */
const SPAWN_POLL_MAX_MS = 2_000;

interface Tool {
  name: string;
  description: string;
  schema: z.ZodType;
  call: (input: never, o: Required<McpOptions>) => Promise<unknown>;
}

/** A failed call whose message is the tool error the agent reads. */
class ToolError extends Error {}

const channel = (path: string, body: unknown, o: Required<McpOptions>) => callReportChannel(path, body, { env: o.env });

/** A report (status or finding): recorded by the node, answered with when. */
async function record(path: string, input: unknown, o: Required<McpOptions>): Promise<string> {
  const a = acceptedResponseSchema.safeParse(await channel(path, input, o));
  return a.success ? `recorded at ${a.data.at}` : 'recorded';
}

async function spawn(input: z.infer<typeof CALL_SCHEMAS.spawn>, o: Required<McpOptions>): Promise<unknown> {
  const asked = (await channel(CALL_PATHS.spawn, input, o)) as SpawnAnswer;
  const deadline = Date.now() + o.spawnTimeoutMs;
  for (let pause = o.spawnPollMs; ; pause = Math.min(pause * 2, SPAWN_POLL_MAX_MS)) {
    const now = (await channel(CALL_PATHS.list, {}, o)) as ChildrenAnswer;
    const child = now.children.find((c) => c.name === asked.name);
    if (child) return { name: asked.name, phase: child.phase ?? 'Pending', message: `child Agent ${asked.name} created` };
    const refused = now.refused.find((r) => r.name === asked.name && r.requestTime === asked.requestTime);
    if (refused) throw new ToolError(`refused: ${refused.field}: ${refused.message}`);
    if (Date.now() >= deadline) {
      throw new ToolError(
        `the controller has not answered the request for ${asked.name} within ${Math.round(o.spawnTimeoutMs / 1000)}s; it stands: see get_child_agents, or call spawn_child_agent again with the same name (that never makes a second child)`,
      );
    }
    await sleep(Math.min(pause, Math.max(0, deadline - Date.now())));
  }
}

export const TOOLS: readonly Tool[] = [
  {
    name: 'update_agent_progress',
    description: 'Report how this agent is doing: status working or blocked with progress (0-100) and a message; completed, failed or error end the agent (its session is stopped and cleaned up).',
    schema: statusReportSchema,
    call: (input, o) => record(REPORT_PATHS.status, input, o),
  },
  {
    name: 'report_agent_finding',
    description: 'Record a finding (type, severity, message, optional JSON data); it is counted on the Agent and archived with its logs.',
    schema: findingSchema,
    call: (input, o) => record(REPORT_PATHS.finding, input, o),
  },
  {
    name: 'spawn_child_agent',
    description:
      "Start a child agent with its own prompt and command, on this agent's node, within this Agent's spec.children limits (maxTotal, maxConcurrent, maxDepth). Returns the child's Agent name. Calling again with the same name never makes a second child.",
    schema: CALL_SCHEMAS.spawn,
    call: (input, o) => spawn(input, o),
  },
  {
    name: 'get_child_agents',
    description: "This agent's children: each one's name, phase, reason, progress, message and findings total, with counts (active, succeeded, failed) and refused requests.",
    schema: CALL_SCHEMAS.list,
    call: (input, o) => channel(CALL_PATHS.list, input, o),
  },
  {
    name: 'get_agent_output',
    description:
      "The last lines of a child's terminal output (tail, default 100, at most 1000), optionally only lines containing grep; from the running session or, once it finished, from its archive.",
    schema: CALL_SCHEMAS.output,
    call: (input, o) => channel(CALL_PATHS.output, input, o),
  },
  {
    name: 'stop_child_agent',
    description: 'Stop a child agent (it is terminated and cleaned up; its own children are stopped too), with an optional reason.',
    schema: CALL_SCHEMAS.stop,
    call: (input, o) => channel(CALL_PATHS.stop, input, o),
  },
];

/** A tool's input schema as MCP lists it: JSON Schema from the zod schema, without the CRD-only keys. */
export function inputSchemaOf(schema: z.ZodType): { type: 'object'; [k: string]: unknown } {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (typeof v !== 'object' || v === null) return v;
    return Object.fromEntries(
      Object.entries(v)
        .filter(([k]) => !k.startsWith('x-kubernetes-') && k !== '$schema')
        .map(([k, x]) => [k, strip(x)]),
    );
  };
  return { ...(strip(json) as Record<string, unknown>), type: 'object' };
}

const text = (value: unknown): string => (typeof value === 'string' ? value : JSON.stringify(value, null, 2));
const toolError = (message: string): CallToolResult => ({ isError: true, content: [{ type: 'text', text: message }] });

/** Runs one tool call: every failure is a tool error that says what is wrong, never a protocol error. */
export async function callTool(name: string, args: unknown, options: McpOptions = {}): Promise<CallToolResult> {
  const o: Required<McpOptions> = { env: options.env ?? process.env, spawnTimeoutMs: options.spawnTimeoutMs ?? 60_000, spawnPollMs: options.spawnPollMs ?? 250 };
  const tool = TOOLS.find((t) => t.name === name);
  if (!tool) return toolError(`unknown tool '${name}': the tools are ${TOOLS.map((t) => t.name).join(', ')}`);
  const parsed = tool.schema.safeParse(args ?? {});
  if (!parsed.success) return toolError(`invalid input for ${name}: ${describeIssues(parsed.error.issues)}`);
  try {
    return { content: [{ type: 'text', text: text(await tool.call(parsed.data as never, o)) }] };
  } catch (err) {
    if (err instanceof ToolError || err instanceof ChannelError) return toolError(`${name}: ${err.message}`);
    return toolError(`${name} failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export function createMcpServer(options: McpOptions = {}): Server {
  const server = new Server(
    { name: 'agent-operator', version: VERSION },
    {
      capabilities: { tools: {} },
      instructions:
        'Tools of the agent-operator platform for the agent running in this session: report progress and findings, and spawn, watch and stop child agents within the limits the Agent allows.',
    },
  );
  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: TOOLS.map((t) => ({ name: t.name, description: t.description, inputSchema: inputSchemaOf(t.schema) })),
  }));
  server.setRequestHandler(CallToolRequestSchema, async (req) => callTool(req.params.name, req.params.arguments, options));
  return server;
}

export const MCP_HELP = `Usage: agent-operator mcp

An MCP server on stdio (newline-delimited JSON-RPC) for the agent in an agent-operator session. Tools:
${TOOLS.map((t) => `  ${t.name}`).join('\n')}
It talks to this session's report channel, which the platform sets up in every session (the agent's
sandbox included), so it works only inside a session. Wiring for Claude Code, Codex and Gemini CLI: docs/mcp.md.`;

export async function runMcp(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(MCP_HELP);
    return 0;
  }
  if (argv.length > 0) {
    console.error(`agent-operator mcp: unexpected argument '${argv[0]}'\n${MCP_HELP}`);
    return 2;
  }
  // The client went away (EPIPE): nothing left to answer.
  process.stdout.on('error', () => process.exit(0));
  const server = createMcpServer();
  await server.connect(new StdioServerTransport());
  // Serves until stdin closes; calls in flight are answered first (nothing else holds the process).
  await new Promise<void>((resolve) => process.stdin.once('end', resolve));
  return 0;
}
