/**
 * The in-session report endpoint a node sidecar runs: one unix socket per agent (openChannel; the
 * socket names the agent) and a loopback port for bearer tokens (agents without a sandbox), one
 * HTTP handler behind both, with per-agent caps (limits.ts). A report only records: it is
 * appended to the agent's workspace (durable) before anything else happens, then handed to a callback
 * that reflects it into status later. Nothing that follows from a report (cleanup) runs here: the old
 * system ran cleanup inside the report call and killed the reporter mid-way.
 *
 * Callbacks: onStatus/onFinding are invoked once the record is durable, in the order the records were
 * written for that agent, and awaited for at most `callbackTimeoutMs` before the 202 goes out. They
 * should only enqueue (the status write is coalesced elsewhere); a slow or failing callback is logged
 * and the agent still gets its 202, because the report is already on disk and can be replayed from there.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { withTimeout } from '../kube/backoff.js';
import { HttpError } from '../kube/errors.js';
import { listenOnChannel, type Channel } from './channel.js';
import { DEFAULT_REPORT_CAPS, ReportLimiter, type CapKind, type ReportCaps } from './limits.js';
import { appendToJournal, DEFAULT_JOURNAL_MAX_BYTES, JournalFullError } from './journal.js';
import {
  CALL_PATHS,
  MAX_BODY_BYTES,
  validateCall,
  type CallInput,
  type CallKind,
  RECORD_FILES,
  REPORT_PATHS,
  validateFinding,
  validateStatusReport,
  type AcceptedResponse,
  type ErrorResponse,
  type Finding,
  type StatusReport,
  type Validated,
} from './protocol.js';

export interface AgentContext {
  uid: string;
  /** Where reports.jsonl and findings.jsonl are appended. */
  workspaceDir: string;
  /** False once the agent has ended: later reports are refused with 409. */
  acceptingReports: boolean;
}

export interface ReportServerOptions<C extends AgentContext = AgentContext> {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  logger: Logger;
  /**
   * The agent a bearer token belongs to, or undefined. Called when a request arrives and again just
   * before its record is written, so an agent that ends mid-request is honoured (409) whether the
   * context returned is a live object or a snapshot.
   */
  authenticate: (token: string) => C | undefined;
  /**
   * The agent a report channel belongs to, by UID (see openChannel): called as authenticate is, for
   * requests that came in on that agent's socket. Undefined: the node does not know it (yet).
   */
  agentContext?: (uid: string) => C | undefined;
  /** Per-agent caps on reports and bytes per minute, whatever the transport. */
  caps?: ReportCaps;
  /** Told of every report refused for a cap (for /metrics). */
  onCapped?: (kind: CapKind) => void;
  onStatus: (ctx: C, report: StatusReport, at: Date) => Promise<void>;
  onFinding: (ctx: C, finding: Finding, at: Date) => Promise<void>;
  /**
   * Answers a call (spawn, list, output, stop) with a JSON body; throws CallRefused for an answer
   * that is an error. Absent: calls get 404.
   */
  onCall?: <K extends CallKind>(ctx: C, kind: K, input: CallInput<K>) => Promise<object>;
  /** How long a 202 waits for the callback before going out anyway. */
  callbackTimeoutMs?: number;
  /** A client must have sent its headers within this time... */
  headersTimeoutMs?: number;
  /** ...and its whole request within this one; then the connection is closed (408). */
  requestTimeoutMs?: number;
  maxConnections?: number;
  /** Connections at once on one agent's socket. */
  maxChannelConnections?: number;
  /** The most each journal of one agent holds; past it a report is refused with 507. */
  journalMaxBytes?: number;
}

export interface ReportServer {
  url: string;
  port: number;
  /**
   * Resolves once every report accepted so far for this agent is written. Cleanup calls it after the
   * agent's context stops accepting reports, so nothing lands in the workspace after it is archived.
   */
  whenIdle(uid: string): Promise<void>;
  /**
   * Listens on the agent's own socket, `<dir>/report.sock` (channel.ts), replacing one a crashed
   * process left; a request on it is that agent's, no token needed. Idempotent; returns the path.
   */
  openChannel(uid: string, dir: string, gid: number | undefined): Promise<string>;
  /** Stops listening on the agent's socket and removes it; idempotent. */
  closeChannel(uid: string): Promise<void>;
  /** Stops listening, lets requests in flight finish (bounded by the request timeout), closes. */
  close(): Promise<void>;
}

const DEFAULTS = {
  host: '127.0.0.1',
  callbackTimeoutMs: 2_000,
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  maxConnections: 128,
  maxChannelConnections: 8,
} as const;
/** How often node checks connections against the header/request timeouts (its default is 30 s). */
const TIMEOUT_CHECK_INTERVAL_MS = 250;
/** After a 413 the rest of the body is discarded for at most this long, so the client can read the answer. */
const LINGER_MS = 500;
const JSON_MEDIA_TYPE = 'application/json';

/** A call's refusal: the status and a message that says what is wrong. */
export class CallRefused extends Error {
  constructor(
    readonly status: 404 | 409 | 422 | 503,
    message: string,
  ) {
    super(message);
  }
}

type Kind = keyof typeof RECORD_FILES;

interface Route {
  kind: Kind;
  validate: (input: unknown) => Validated<StatusReport | Finding>;
}

const ROUTES: Record<string, Route> = {
  [REPORT_PATHS.status]: { kind: 'status', validate: validateStatusReport },
  [REPORT_PATHS.finding]: { kind: 'finding', validate: validateFinding },
};
const CALLS = new Map<string, CallKind>(Object.entries(CALL_PATHS).map(([kind, path]) => [path, kind as CallKind]));

function bearerToken(req: IncomingMessage): string {
  const header = req.headers.authorization;
  if (!header) throw new HttpError(401, undefined, 'missing Authorization header: send "Authorization: Bearer $AGENT_REPORT_TOKEN"', { 'WWW-Authenticate': 'Bearer' });
  const match = /^Bearer +(\S+) *$/i.exec(header);
  if (!match) throw new HttpError(401, undefined, 'Authorization header must be "Bearer <token>"', { 'WWW-Authenticate': 'Bearer' });
  return match[1]!;
}

function checkContentType(req: IncomingMessage): void {
  const [mediaType, ...params] = (req.headers['content-type'] ?? '').split(';').map((p) => p.trim().toLowerCase());
  const charset = params
    .find((p) => p.startsWith('charset='))
    ?.slice('charset='.length)
    .replace(/"/g, '');
  if (mediaType !== JSON_MEDIA_TYPE || (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8')) {
    throw new HttpError(415, undefined, `Content-Type must be ${JSON_MEDIA_TYPE} (got '${req.headers['content-type'] ?? 'none'}')`);
  }
}

const tooLarge = () => new HttpError(413, undefined, `request body is over the ${MAX_BODY_BYTES} byte limit`);

/** The body, up to MAX_BODY_BYTES; past that it stops reading and fails with 413. */
function readBody(req: IncomingMessage, res: ServerResponse): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) return Promise.reject(tooLarge());
  // Only now, with the request judged acceptable, ask a client that waits for it to send the body.
  if (req.headers.expect?.toLowerCase() === '100-continue') res.writeContinue();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        cleanup();
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onClose = () => {
      if (!req.complete) onError(new HttpError(400, undefined, 'client closed the connection before sending the whole body'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

function parseJson(body: Buffer): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new HttpError(400, undefined, 'body is not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, undefined, `body is not valid JSON: ${(err as Error).message}`);
  }
}

function send(res: ServerResponse, status: number, body: AcceptedResponse | ErrorResponse | object, headers: Record<string, string> = {}): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'Content-Type': JSON_MEDIA_TYPE,
    'Content-Length': String(Buffer.byteLength(payload)),
    'Cache-Control': 'no-store',
    // Keep-alive off: one request per connection, so no idle connection outlives its report.
    Connection: 'close',
  });
  res.end(payload);
}

export async function startReportServer<C extends AgentContext>(options: ReportServerOptions<C>): Promise<ReportServer> {
  const { logger, authenticate } = options;
  const host = options.host ?? DEFAULTS.host;
  const callbackTimeoutMs = options.callbackTimeoutMs ?? DEFAULTS.callbackTimeoutMs;
  const headersTimeoutMs = options.headersTimeoutMs ?? DEFAULTS.headersTimeoutMs;
  const requestTimeoutMs = Math.max(options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs, headersTimeoutMs);
  const journalMaxBytes = options.journalMaxBytes ?? DEFAULT_JOURNAL_MAX_BYTES;
  const log = logger.child({ component: 'report-server' });

  /** Per agent, the tail of its write chain: records are written (and callbacks started) in order. */
  const chains = new Map<string, Promise<void>>();
  const inFlight = new Set<Promise<void>>();
  const limiter = new ReportLimiter(options.caps ?? DEFAULT_REPORT_CAPS);
  /** Open agent sockets by UID, and the agent each accepted connection came in for. */
  const channels = new Map<string, Promise<Channel>>();
  const channelOf = new WeakMap<Socket, string>();

  /**
   * Queues the record behind the agent's earlier ones. `written` resolves once it is durable, with
   * the callback's promise (boxed, so it is awaited separately from the write).
   */
  function record(ctx: C, kind: Kind, report: StatusReport | Finding): { at: Date; written: Promise<{ reflected: Promise<void> }> } {
    const at = new Date();
    const file = join(ctx.workspaceDir, RECORD_FILES[kind]);
    const line = `${JSON.stringify({ at: at.toISOString(), ...report })}\n`;
    const written = (chains.get(ctx.uid) ?? Promise.resolve()).then(async () => {
      await appendToJournal(file, line, journalMaxBytes);
      // Started inside the chain so callbacks see an agent's reports in file order.
      const reflected = Promise.resolve().then(() => (kind === 'status' ? options.onStatus(ctx, report as StatusReport, at) : options.onFinding(ctx, report as Finding, at)));
      return { reflected };
    });
    const tail = written.then(
      () => undefined,
      () => undefined,
    );
    chains.set(ctx.uid, tail);
    void tail.then(() => {
      if (chains.get(ctx.uid) === tail) chains.delete(ctx.uid);
    });
    return { at, written };
  }

  /** The agent behind a request: the owner of the socket it came in on, else its bearer token's. */
  function identifier(req: IncomingMessage): () => C | undefined {
    const uid = channelOf.get(req.socket);
    if (uid !== undefined) return () => options.agentContext?.(uid);
    const token = bearerToken(req);
    return () => authenticate(token);
  }

  function unknownAgent(req: IncomingMessage): HttpError {
    const uid = channelOf.get(req.socket);
    if (uid === undefined) return new HttpError(401, undefined, 'invalid report token', { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
    // A socket is only opened for an agent of this node: its Agent is not in the sidecar's cache yet.
    return new HttpError(503, undefined, `the node does not know agent ${uid} yet (its sidecar is starting); retry shortly`, { 'Retry-After': '1' });
  }

  function capped(refusal: ReturnType<ReportLimiter['admit']>): void {
    if (!refusal) return;
    options.onCapped?.(refusal.kind);
    throw new HttpError(429, undefined, refusal.message, { 'Retry-After': String(refusal.retryAfterSeconds) });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://report.invalid').pathname;
    if (path === REPORT_PATHS.health) {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, undefined, `${req.method} not allowed on ${path}`, { Allow: 'GET, HEAD' });
      send(res, 200, { ok: true });
      return;
    }
    const route = ROUTES[path];
    const call = CALLS.get(path);
    if (!route && !(call && options.onCall)) throw new HttpError(404, undefined, `no such endpoint: ${path} (use POST ${REPORT_PATHS.status} or POST ${REPORT_PATHS.finding})`);
    if (req.method !== 'POST') throw new HttpError(405, undefined, `${req.method} not allowed on ${path}: use POST`, { Allow: 'POST' });
    const identify = identifier(req);
    const ctx = identify();
    if (!ctx) throw unknownAgent(req);
    capped(limiter.admit(ctx.uid));
    checkContentType(req);
    const body = await readBody(req, res);
    capped(limiter.charge(ctx.uid, body.length));
    const parsed = parseJson(body);
    if (!route) {
      await answerCall(ctx, call!, parsed, res);
      return;
    }
    const validated = route.validate(parsed);
    if (!validated.ok) throw new HttpError(400, undefined, validated.error);

    // Checked and enqueued in one synchronous step: whoever flips acceptingReports and then awaits
    // whenIdle() either sees this report written or makes it fail here.
    const current = identify();
    if (!current || current.uid !== ctx.uid || !current.acceptingReports) {
      throw new HttpError(409, undefined, `agent ${ctx.uid} has ended and no longer accepts reports`);
    }
    const { at, written } = record(current, route.kind, validated.value);
    let reflected: Promise<void>;
    try {
      ({ reflected } = await written);
    } catch (err) {
      if (err instanceof JournalFullError) throw new HttpError(507, `the agent's ${RECORD_FILES[route.kind]} is full (${err.maxBytes} bytes): this report is not recorded`);
      log.error({ err, uid: ctx.uid, kind: route.kind }, 'could not record a report');
      throw new HttpError(500, undefined, `could not record the report: ${(err as Error).message}`);
    }
    try {
      await withTimeout(reflected, callbackTimeoutMs, 'the report to reach the status');
    } catch (err) {
      log.warn({ err, uid: ctx.uid, kind: route.kind }, 'report recorded; its callback failed or was slow');
    }
    log.debug({ uid: ctx.uid, kind: route.kind }, 'report recorded');
    send(res, 202, { accepted: true, at: at.toISOString() });
  }

  /** A call: validated like a report, refused once the agent has ended, answered by onCall. */
  async function answerCall(ctx: C, kind: CallKind, body: unknown, res: ServerResponse): Promise<void> {
    const validated = validateCall(kind, body);
    if (!validated.ok) throw new HttpError(400, undefined, validated.error);
    if (!ctx.acceptingReports) throw new HttpError(409, undefined, `agent ${ctx.uid} has ended and can no longer call ${kind}`);
    try {
      send(res, 200, await options.onCall!(ctx, kind, validated.value));
    } catch (err) {
      if (err instanceof CallRefused) throw new HttpError(err.status, undefined, err.message);
      throw err;
    }
  }

  function refuse(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    const status = err instanceof HttpError ? err.statusCode : 500;
    const message = err instanceof HttpError ? err.message : 'internal error';
    if (!(err instanceof HttpError)) log.error({ err }, 'report request failed');
    else log.info({ status, path: req.url, error: message }, 'report request refused');
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    const socket = req.socket;
    send(res, status, { error: message }, err instanceof HttpError ? err.headers : {});
    if (!req.complete) {
      // Stop taking the body: end our side once the answer is out and drop the connection shortly
      // after, whatever the client still sends (node discards it meanwhile, unbuffered).
      res.once('finish', () => setTimeout(() => socket.destroy(), LINGER_MS).unref());
    }
  }

  const server = createServer(
    {
      headersTimeout: headersTimeoutMs,
      requestTimeout: requestTimeoutMs,
      connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
    },
    (req, res) => {
      const done = handle(req, res)
        .catch((err: unknown) => refuse(req, res, err))
        .catch((err: unknown) => {
          // Never let one connection's failure become an unhandled rejection that ends the sidecar.
          log.error({ err }, 'could not answer a report request');
          res.destroy();
        });
      inFlight.add(done);
      void done.finally(() => inFlight.delete(done));
    },
  );
  // With a listener here node does not answer "100 Continue" itself: readBody does, after the checks.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => server.emit('request', req, res));
  server.maxConnections = options.maxConnections ?? DEFAULTS.maxConnections;
  server.setTimeout(requestTimeoutMs);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  log.info({ url }, 'report server listening');

  return {
    url,
    port,
    whenIdle: async (uid) => {
      await chains.get(uid);
    },
    openChannel: async (uid, dir, gid) => {
      let opening = channels.get(uid);
      if (!opening) {
        opening = listenOnChannel(
          dir,
          gid,
          (socket) => {
            channelOf.set(socket, uid);
            server.emit('connection', socket);
          },
          options.maxChannelConnections ?? DEFAULTS.maxChannelConnections,
        );
        channels.set(uid, opening);
        // Logged by the caller, which knows the Agent's name.
        void opening.catch(() => channels.delete(uid));
      }
      return (await opening).path;
    },
    closeChannel: async (uid) => {
      const opening = channels.get(uid);
      if (!opening) return;
      channels.delete(uid);
      limiter.forget(uid);
      await (await opening.catch(() => undefined))?.close();
    },
    close: async () => {
      for (const opening of channels.values()) await (await opening.catch(() => undefined))?.close();
      channels.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await withTimeout(Promise.allSettled([...inFlight]), requestTimeoutMs + callbackTimeoutMs, 'requests in flight').catch(() => undefined);
      server.closeAllConnections();
      await closed;
      await Promise.allSettled([...chains.values()]);
    },
  };
}
