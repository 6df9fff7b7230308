/**
 * `agent-operator report`: what an agent runs inside its session to tell the platform how it is doing.
 * It validates locally with the server's own schemas, POSTs to the agent's report channel, and retries
 * only when the endpoint could not be reached (a sidecar restarting), never when it answered.
 */
// Namespaces, not named imports: looked up at call time, so interceptors that patch the module work.
import http from 'node:http';
import https from 'node:https';
import { parseArgs } from 'node:util';
import { AGENT_ENV, LIMITS } from '../api/constants.js';
import { REPORTED_STATES } from '../api/phase.js';
import { UsageError } from '../cmd/flags.js';
import { acceptedResponseSchema, errorResponseSchema, MAX_DATA_BYTES, MAX_FINDING_TYPE_LENGTH, REPORT_PATHS, SEVERITIES, validateFinding, validateStatusReport, type Validated } from './protocol.js';

export const EXIT = {
  ok: 0,
  /** The endpoint answered with an error (bad report, bad token, agent ended, server failure). */
  refused: 1,
  /** Bad or missing flag, or the channel's variables (AGENT_REPORT_SOCKET, or AGENT_REPORT_URL and AGENT_REPORT_TOKEN) missing or invalid. */
  usage: 2,
  /** The endpoint could not be reached, retries included. */
  unreachable: 3,
} as const;

const PROG = 'agent-operator report';

export const REPORT_HELP = `Usage:
  ${PROG} --status ${REPORTED_STATES.join('|')} [--progress N] [--message M]
  ${PROG} finding --type T --severity ${SEVERITIES.join('|')} --message M [--data JSON]

Tells the platform how this agent is doing, from inside its session. 'completed', 'failed' and
'error' are final: the agent is stopped and cleaned up afterwards (not by this command).

Options:
  --status S      ${REPORTED_STATES.join(', ')}
  --progress N    percent done, an integer from 0 to 100
  --message M     what is going on (at most ${LIMITS.messageLength} characters; required for a finding)
  --type T        kind of finding, 1 to ${MAX_FINDING_TYPE_LENGTH} characters
  --severity S    ${SEVERITIES.join(', ')}
  --data JSON     any JSON value attached to the finding (at most ${MAX_DATA_BYTES} bytes)
  -h, --help      this text

Environment (set in every agent session):
  ${AGENT_ENV.reportSocket} this agent's own report socket (sandboxed agents); when set, used alone
  ${AGENT_ENV.reportUrl}    base URL of the node's report endpoint (agents without a sandbox)
  ${AGENT_ENV.reportToken}  this agent's secret token (with ${AGENT_ENV.reportUrl})

Exit codes:
  ${EXIT.ok}  recorded
  ${EXIT.refused}  the endpoint refused the report (its error is printed)
  ${EXIT.usage}  bad or missing flag, or a missing environment variable
  ${EXIT.unreachable}  the endpoint could not be reached (after retries)`;

export interface ReportCliOptions {
  env?: NodeJS.ProcessEnv;
  out?: (line: string) => void;
  err?: (line: string) => void;
  /** Per attempt, connection to last byte of the answer. */
  timeoutMs?: number;
  /** Pauses before each retry; retries happen only when no answer came. */
  retryDelaysMs?: readonly number[];
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_RETRY_DELAYS_MS = [500, 1_500] as const;

const asFlag = (field: string) => `--${field.split('.')[0]}`;

function orUsageError<T>(result: Validated<T>): T {
  if (!result.ok) throw new UsageError(result.error);
  return result.value;
}

function parseFlags(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        status: { type: 'string' },
        progress: { type: 'string' },
        message: { type: 'string' },
        type: { type: 'string' },
        severity: { type: 'string' },
        data: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function rejectFlags(values: Record<string, unknown>, flags: readonly string[], form: string): void {
  const misplaced = flags.filter((f) => values[f] !== undefined);
  if (misplaced.length > 0) throw new UsageError(`${misplaced.map((f) => `--${f}`).join(', ')} not allowed in ${form}`);
}

/** The endpoint path and the validated body the command line asks for, or undefined for --help. */
function reportFromArgs(argv: string[]): { path: string; body: unknown } | undefined {
  const isFinding = argv[0] === 'finding';
  const values = parseFlags(isFinding ? argv.slice(1) : argv);
  if (values.help) return undefined;
  if (isFinding) {
    rejectFlags(values, ['status', 'progress'], "'report finding'");
    let data: unknown;
    if (values.data !== undefined) {
      try {
        data = JSON.parse(values.data);
      } catch (err) {
        throw new UsageError(`--data: not valid JSON: ${(err as Error).message}`);
      }
    }
    const finding = orUsageError(validateFinding({ type: values.type, severity: values.severity, message: values.message, data }, asFlag));
    return { path: REPORT_PATHS.finding, body: finding };
  }
  rejectFlags(values, ['type', 'severity', 'data'], "a status report (use 'report finding')");
  const progress = values.progress !== undefined && /^[+-]?\d+$/.test(values.progress) ? Number(values.progress) : values.progress;
  const report = orUsageError(validateStatusReport({ status: values.status, progress, message: values.message }, asFlag));
  return { path: REPORT_PATHS.status, body: report };
}

/**
 * Where this session's reports go: its own socket when AGENT_REPORT_SOCKET is set (a sandboxed
 * agent; the socket says who it is), else the loopback URL with AGENT_REPORT_TOKEN.
 */
export type Endpoint = { kind: 'socket'; socketPath: string; path: string; describe: string } | { kind: 'url'; url: URL; token: string; describe: string };

export function endpointFrom(env: NodeJS.ProcessEnv, path: string): Endpoint {
  const outsideSession = 'it is set in every agent session; run this command from inside one';
  const socketPath = env[AGENT_ENV.reportSocket];
  if (socketPath) {
    if (!socketPath.startsWith('/')) throw new UsageError(`${AGENT_ENV.reportSocket} must be an absolute path: '${socketPath}'`);
    return { kind: 'socket', socketPath, path, describe: `the report socket ${socketPath}` };
  }
  const base = env[AGENT_ENV.reportUrl];
  const token = env[AGENT_ENV.reportToken];
  if (!base) throw new UsageError(`neither ${AGENT_ENV.reportSocket} nor ${AGENT_ENV.reportUrl} is set: ${outsideSession}`);
  if (!token) throw new UsageError(`${AGENT_ENV.reportToken} is not set: ${outsideSession}`);
  let url: URL;
  try {
    // Appended, not resolved, so a base URL with a path prefix keeps it.
    url = new URL(`${base.replace(/\/+$/, '')}${path}`);
  } catch {
    throw new UsageError(`${AGENT_ENV.reportUrl} is not a valid URL: '${base}'`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`${AGENT_ENV.reportUrl} must be an http or https URL: '${base}'`);
  }
  return { kind: 'url', url, token, describe: url.origin };
}

interface Answer {
  status: number;
  text: string;
}

/** An error raised before any answer arrived: the report may not have reached the server. */
class Unreachable extends Error {}

function postOnce(endpoint: Endpoint, body: string, timeoutMs: number): Promise<Answer> {
  const headers: Record<string, string> = { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) };
  const common = { method: 'POST', signal: AbortSignal.timeout(timeoutMs) };
  return new Promise((resolve, reject) => {
    let answered = false;
    const onAnswer = (res: http.IncomingMessage) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      // The server answered: whatever it recorded stands, so this is reported, not retried.
      res.on('error', (err) => resolve({ status: res.statusCode ?? 0, text: `(answer cut off: ${err.message})` }));
    };
    const req =
      endpoint.kind === 'socket'
        ? http.request({ ...common, socketPath: endpoint.socketPath, path: endpoint.path, headers: { ...headers, Host: 'agent-operator' } }, onAnswer)
        : (endpoint.url.protocol === 'https:' ? https.request : http.request)(endpoint.url, { ...common, headers: { ...headers, Authorization: `Bearer ${endpoint.token}` } }, onAnswer);
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (answered) return;
      const why = err.name === 'AbortError' ? `no answer within ${timeoutMs} ms` : (err.code ?? err.message);
      reject(new Unreachable(why));
    });
    req.end(body);
  });
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function describeRefusal(answer: Answer): string {
  const parsed = errorResponseSchema.safeParse(safeJson(answer.text));
  // Not our JSON (a proxy, another server on that port): show the raw start of it.
  const error = parsed.success ? parsed.data.error : answer.text.slice(0, 200) || 'no error message';
  return `refused (HTTP ${answer.status}): ${error}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Why a call on the report channel did not get a 2xx answer. */
export class ChannelError extends Error {
  constructor(
    /** usage: not in a session (environment); refused: the node answered with an error; unreachable: no answer after retries. */
    readonly kind: 'usage' | 'refused' | 'unreachable',
    message: string,
  ) {
    super(message);
  }
}

export interface ChannelCallOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  retryDelaysMs?: readonly number[];
  /** Told before each retry. */
  onRetry?: (message: string) => void;
}

/**
 * One call on this session's report channel: the node's answer (parsed JSON) to `body` sent to
 * `path`. The one place that knows the channel's transport (the agent's socket, or the loopback URL
 * and token: endpointFrom). Retried only when no answer came (a sidecar restarting), never when the
 * node answered.
 */
export async function callReportChannel(path: string, body: unknown, options: ChannelCallOptions = {}): Promise<unknown> {
  const retryDelaysMs = options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let endpoint: Endpoint;
  try {
    endpoint = endpointFrom(options.env ?? process.env, path);
  } catch (e) {
    if (e instanceof UsageError) throw new ChannelError('usage', e.message);
    throw e;
  }
  const payload = JSON.stringify(body);
  for (let attempt = 0; ; attempt++) {
    try {
      const answer = await postOnce(endpoint, payload, timeoutMs);
      if (answer.status >= 200 && answer.status < 300) return safeJson(answer.text);
      throw new ChannelError('refused', describeRefusal(answer));
    } catch (e) {
      if (!(e instanceof Unreachable)) throw e;
      const delay = retryDelaysMs[attempt];
      if (delay === undefined) throw new ChannelError('unreachable', `cannot reach ${endpoint.describe} (${e.message}) after ${attempt + 1} attempts`);
      options.onRetry?.(`cannot reach ${endpoint.describe} (${e.message}); retrying in ${delay} ms`);
      await sleep(delay);
    }
  }
}

export async function runReport(argv: string[], options: ReportCliOptions = {}): Promise<number> {
  const out = options.out ?? ((line: string) => console.log(line));
  const err = options.err ?? ((line: string) => console.error(line));

  let report: { path: string; body: unknown } | undefined;
  try {
    report = reportFromArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    err(`${PROG}: ${e.message}\nRun '${PROG} --help' for usage.`);
    return EXIT.usage;
  }
  if (!report) {
    out(REPORT_HELP);
    return EXIT.ok;
  }
  try {
    const answer = await callReportChannel(report.path, report.body, { ...options, onRetry: (m) => err(`${PROG}: ${m}`) });
    const accepted = acceptedResponseSchema.safeParse(answer);
    out(accepted.success ? `recorded at ${accepted.data.at}` : 'recorded');
    return EXIT.ok;
  } catch (e) {
    if (!(e instanceof ChannelError)) throw e;
    if (e.kind === 'usage') {
      err(`${PROG}: ${e.message}\nRun '${PROG} --help' for usage.`);
      return EXIT.usage;
    }
    err(`${PROG}: ${e.message}`);
    return e.kind === 'refused' ? EXIT.refused : EXIT.unreachable;
  }
}
