/** Shared pieces of the src/kube unit tests: a KubeConfig for a nock'd server, a silent logger, waiting. */
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';
import nock from 'nock';
import { pino, type Logger } from 'pino';
import { shareConnections } from '../../src/kube/client.js';

export const SERVER = 'https://kube.test:6443';

export function testKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: SERVER, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'secret-token' }],
    contexts: [{ name: 'ctx', cluster: 'c', user: 'u' }],
    currentContext: 'ctx',
  });
  return shareConnections(kc);
}

export const silentLogger = (): Logger => pino({ level: 'silent' });

/** Intercepts SERVER only; anything unmatched fails instead of reaching the network. */
export function nockServer(): nock.Scope {
  nock.disableNetConnect();
  return nock(SERVER);
}

export function resetNock(): void {
  nock.cleanAll();
  nock.enableNetConnect();
}

/** A watch response body: events written as JSON lines; stays open until end() (or the client aborts). */
export class WatchBody {
  readonly stream = new PassThrough();
  send(type: string, object: unknown): this {
    this.stream.write(`${JSON.stringify({ type, object })}\n`);
    return this;
  }
  end(): void {
    this.stream.end();
  }
}

export async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}
