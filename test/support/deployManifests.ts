/**
 * The deploy/ manifests as files (no kustomize): what a kustomization lists, parsed, with the
 * few shapes tests look into. test/integration/deploy.test.ts checks the rendered, applied result.
 */
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseAllDocuments, parseDocument, type Document } from 'yaml';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';

export const DEPLOY_DIR = join(PACKAGE_ROOT, 'deploy');
export const BASE_DIR = join(DEPLOY_DIR, 'base');

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}

export interface Probe {
  httpGet?: { path: string; port: string | number };
  periodSeconds?: number;
  failureThreshold?: number;
}

export interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort: number }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    runAsUser?: number;
    runAsNonRoot?: boolean;
    privileged?: boolean;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    procMount?: string;
    capabilities?: { drop?: string[]; add?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string }[];
}

export interface PodSpec {
  serviceAccountName?: string;
  terminationGracePeriodSeconds?: number;
  hostUsers?: boolean;
  securityContext?: { runAsUser?: number; runAsGroup?: number; runAsNonRoot?: boolean; seccompProfile?: { type: string; localhostProfile?: string } };
  topologySpreadConstraints?: { topologyKey: string; labelSelector?: { matchLabels?: Record<string, string> } }[];
  affinity?: unknown;
  containers: Container[];
  volumes?: { name: string; hostPath?: { path: string; type?: string }; persistentVolumeClaim?: { claimName: string }; emptyDir?: unknown }[];
}

export interface Workload extends KubeObject {
  spec: {
    replicas?: number;
    selector: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
  };
}

export interface Kustomization {
  namespace?: string;
  resources?: string[];
  components?: string[];
  patches?: { path?: string }[];
  images?: { name: string; newName?: string; newTag?: string }[];
}

/** A YAML file under the package root, every document of it, as the yaml library's Documents (comments kept). */
export function readDocuments(path: string): Document[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  if (!Array.isArray(docs)) throw new Error(`${path}: not a YAML stream`);
  for (const d of docs) if (d.errors.length > 0) throw new Error(`${relative(PACKAGE_ROOT, path)}: ${d.errors[0]!.message}`);
  return docs;
}

export function readKustomization(dir: string): Kustomization {
  for (const name of ['kustomization.yaml', 'kustomization.yml', 'Kustomization']) {
    try {
      return parseDocument(readFileSync(join(dir, name), 'utf8')).toJS() as Kustomization;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  throw new Error(`${dir}: no kustomization file`);
}

/** The files a kustomization lists as resources directly (not those of other kustomizations it includes). */
export function resourceFiles(dir: string): string[] {
  return (readKustomization(dir).resources ?? []).filter((r) => /\.ya?ml$/.test(r)).map((r) => join(dir, r));
}

/** The objects of the base's own files, before kustomize (so without its namespace and image rewrites). */
export function baseObjects(): KubeObject[] {
  return resourceFiles(BASE_DIR).flatMap((f) => readDocuments(f).map((d) => d.toJS() as KubeObject));
}

export function findObject<T extends KubeObject = KubeObject>(objects: KubeObject[], kind: string, name: string): T {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name} in deploy/`);
  return found as T;
}

export const CONTROLLER = { kind: 'Deployment', name: 'agent-operator-controller', serviceAccount: 'agent-operator-controller' } as const;
export const SIDECAR = { kind: 'DaemonSet', name: 'agent-operator-sidecar', serviceAccount: 'agent-operator-sidecar' } as const;

/** The value of `--flag=value` or `--flag value` in an argv. */
export function flagValue(args: readonly string[], flag: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a.startsWith(`${flag}=`)) return a.slice(flag.length + 1);
    if (a === flag) return args[i + 1];
  }
  return undefined;
}

/**
 * Whether a log line records a refusal by RBAC: the authorizer's "User ... cannot <verb> resource ..."
 * wording. Other 403s are not the role's doing: admission's "unable to create new content in
 * namespace ... because it is being terminated" is what a namespace in deletion answers anyone.
 */
export function isRbacRefusal(line: string): boolean {
  return /\bcannot [a-z]+ resource "/.test(line);
}

/** Moves the metrics and probe bind addresses onto the given loopback ports (host network). */
export function withLoopbackPorts(args: readonly string[], metricsPort: number, probePort: number): string[] {
  return args.map((a) =>
    a.startsWith('--metrics-bind-address=')
      ? `--metrics-bind-address=127.0.0.1:${metricsPort}`
      : a.startsWith('--health-probe-bind-address=')
        ? `--health-probe-bind-address=127.0.0.1:${probePort}`
        : a,
  );
}
