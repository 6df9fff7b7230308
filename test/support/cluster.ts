/**
 * Helpers for integration tests against the control plane test/run.ts starts once per run
 * (KUBECONFIG, AO_TEST_STATE_DIR and AO_KUBECTL point at it).
 */
import { inspect } from 'node:util';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestContext } from 'node:test';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { execa } from 'execa';
import { apiErrorCode } from '../../src/dev/apiErrors.js';
import { optInReferences } from '../../src/dev/stack.js';
import { openControlPlane, type ControlPlaneClient, type KubectlResult } from '../../src/dev/controlPlane.js';

function requiredEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run integration tests through 'npm test' or 'node dist/test/run.js'`);
  return value;
}

export function kubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(requiredEnv('KUBECONFIG'));
  return kc;
}

/** The run's control plane, for what needs more than the admin kubeconfig (other users' credentials). */
export function controlPlane(): Promise<ControlPlaneClient> {
  return openControlPlane(requiredEnv('AO_TEST_STATE_DIR'));
}

/** A short random suffix for names that must not collide across tests and runs. */
export function uniqueSuffix(): string {
  return randomBytes(3).toString('hex');
}

/**
 * Creates a namespace named `<prefix>-<random>` and deletes it after the test. Deletion is not
 * awaited unless `waitForDeletion` is set (namespace termination takes seconds). The namespace opts
 * in to the node sidecars' reads of its ConfigMaps and Secrets (the README's RoleBinding) unless
 * `optIn` is false.
 */
export async function createTestNamespace(
  t: TestContext,
  prefix: string,
  opts: { waitForDeletion?: boolean; timeoutMs?: number; optIn?: boolean; annotations?: Record<string, string> } = {},
): Promise<string> {
  const base =
    prefix
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 50) || 'test';
  const name = `${base}-${uniqueSuffix()}`;
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name, labels: { 'agent-operator.test/namespace': 'true' }, ...(opts.annotations ? { annotations: opts.annotations } : {}) } } });
  t.after(async () => {
    try {
      await core.deleteNamespace({ name });
    } catch (err) {
      if (apiErrorCode(err) !== 404) throw err;
    }
    if (opts.waitForDeletion) {
      await waitFor(
        async () => {
          try {
            await core.readNamespace({ name });
            return false;
          } catch (err) {
            if (apiErrorCode(err) === 404) return true;
            throw err;
          }
        },
        { timeoutMs: opts.timeoutMs ?? 60_000, what: `namespace ${name} to be deleted` },
      );
    }
  });
  if (opts.optIn !== false) await optInReferences(kubeConfig(), name);
  return name;
}

/** kubectl (AO_KUBECTL) as the admin unless `kubeconfig` says otherwise; never throws on a non-zero exit. */
export async function kubectl(args: string[], opts: { input?: string; timeoutMs?: number; kubeconfig?: string } = {}): Promise<KubectlResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const r = await execa(requiredEnv('AO_KUBECTL'), args, {
    timeout: timeoutMs,
    reject: false,
    env: {
      KUBECONFIG: opts.kubeconfig ?? requiredEnv('KUBECONFIG'),
      KUBECACHEDIR: join(requiredEnv('AO_TEST_STATE_DIR'), 'kubectl-cache'),
    },
    ...(opts.input !== undefined ? { input: opts.input } : {}),
  });
  if (r.timedOut) throw new Error(`kubectl ${args.join(' ')} timed out after ${timeoutMs} ms`);
  return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode ?? 1 };
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** What is awaited, for the timeout message ("agent x to be Running"). */
  what: string;
}

/**
 * Polls `fn` until it returns a value other than undefined/false and returns that value. Errors
 * thrown by `fn` count as "not yet"; the last one is quoted if time runs out.
 */
export async function waitFor<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, opts: WaitOptions): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined && value !== false) return value;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError === undefined ? '' : ` (last error: ${lastError instanceof Error ? lastError.message : inspect(lastError)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what}${why}`);
    }
    await sleep(Math.min(opts.intervalMs ?? 200, Math.max(0, deadline - Date.now())));
  }
}
