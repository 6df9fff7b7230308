/**
 * The HTTP endpoints an operator is expected to serve: /metrics (Prometheus text) on one address,
 * /healthz and /readyz on another, as controller-runtime splits them.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

/** A check returns undefined when fine, or what is wrong. */
export type Check = () => string | undefined;

export interface ProbeServers {
  metricsUrl: string;
  healthUrl: string;
  close(): Promise<void>;
}

export function parseHostPort(addr: string, flag: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(addr);
  if (!m) throw new Error(`${flag}: expected HOST:PORT or :PORT, got "${addr}"`);
  const port = Number(m[2]);
  if (port > 65535) throw new Error(`${flag}: port ${port} is out of range`);
  return { host: m[1] === '' ? '0.0.0.0' : m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

function listen(server: Server, addr: string, flag: string): Promise<string> {
  const { host, port } = parseHostPort(addr, flag);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address() as AddressInfo;
      const shown = a.address === '0.0.0.0' || a.address === '::' ? '127.0.0.1' : a.address;
      resolve(`http://${shown.includes(':') ? `[${shown}]` : shown}:${a.port}`);
    });
  });
}

function reply(res: ServerResponse, code: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function checks(res: ServerResponse, list: Record<string, Check>, verbose: boolean): void {
  const results = Object.entries(list).map(([name, check]) => {
    let problem: string | undefined;
    try {
      problem = check();
    } catch (err) {
      problem = err instanceof Error ? err.message : String(err);
    }
    return { name, problem };
  });
  const failed = results.filter((r) => r.problem !== undefined);
  const lines = results.map((r) => (r.problem === undefined ? `[+]${r.name} ok` : `[-]${r.name} failed: ${r.problem}`));
  if (failed.length > 0) reply(res, 503, `${lines.join('\n')}\nhealthz check failed\n`);
  else reply(res, 200, verbose ? `${lines.join('\n')}\nok\n` : 'ok');
}

export async function startProbeServers(opts: { metricsAddr: string; healthAddr: string; registry: Registry; healthz: Record<string, Check>; readyz: Record<string, Check> }): Promise<ProbeServers> {
  const metrics = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') return reply(res, 404, 'not found\n');
    opts.registry.metrics().then(
      (text) => reply(res, 200, text, opts.registry.contentType),
      (err: unknown) => reply(res, 500, `${String(err)}\n`),
    );
  });
  const health = createServer((req, res) => {
    const [path, query] = (req.url ?? '').split('?');
    const verbose = (query ?? '').includes('verbose');
    if (req.method !== 'GET') return reply(res, 405, 'method not allowed\n');
    if (path === '/healthz' || path === '/livez') return checks(res, opts.healthz, verbose);
    if (path === '/readyz') return checks(res, opts.readyz, verbose);
    reply(res, 404, 'not found\n');
  });
  for (const s of [metrics, health]) {
    s.requestTimeout = 10_000;
    s.headersTimeout = 5_000;
    s.keepAliveTimeout = 5_000;
  }
  const metricsUrl = await listen(metrics, opts.metricsAddr, '--metrics-bind-address');
  let healthUrl: string;
  try {
    healthUrl = await listen(health, opts.healthAddr, '--health-probe-bind-address');
  } catch (err) {
    metrics.close();
    throw err;
  }
  const close = (s: Server) =>
    new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  return {
    metricsUrl,
    healthUrl,
    close: async () => {
      await Promise.all([close(metrics), close(health)]);
    },
  };
}
