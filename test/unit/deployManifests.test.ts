/**
 * The deploy/ manifests as written: the properties a reviewer would otherwise check by eye (every
 * RBAC verb justified, flags and ports and probes agreeing, the hardening the controller and the
 * sidecar promise, nothing forgotten in a kustomization). test/integration/deploy.test.ts applies
 * them to a real API server and checks what the permissions actually allow.
 */
import assert from 'node:assert/strict';
import { DEFAULT_RESTART_POLICY } from '../../src/cmd/restartPolicy.js';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { isMap, isScalar, isSeq } from 'yaml';
import { CRD_FILES } from '../../src/api/crd.js';
import { DEFAULTS } from '../../src/api/constants.js';
import { agentStatus } from '../../src/api/agent.js';
import { CONTROLLER_STATUS_FIELDS } from '../../src/controller/reconcile.js';
import { SIDECAR_STATUS_FIELDS } from '../../src/sidecar/decide.js';
import { SANDBOX_CAPABILITIES } from '../../src/sidecar/runtime/capabilities.js';
import { CRDS_DIR, PACKAGE_ROOT } from '../../src/dev/paths.js';
import {
  BASE_DIR,
  CONTROLLER,
  DEPLOY_DIR,
  SIDECAR,
  baseObjects,
  findObject,
  flagValue,
  isRbacRefusal,
  readDocuments,
  readKustomization,
  resourceFiles,
  type Container,
  type KubeObject,
  type Workload,
} from '../support/deployManifests.js';

const objects = baseObjects();
const controller = findObject<Workload>(objects, CONTROLLER.kind, CONTROLLER.name);
const sidecar = findObject<Workload>(objects, SIDECAR.kind, SIDECAR.name);
const containerOf = (w: Workload): Container => {
  assert.equal(w.spec.template.spec.containers.length, 1, `${w.metadata.name}: one container`);
  return w.spec.template.spec.containers[0]!;
};
const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };

function yamlFilesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.ya?ml$/.test(e.name))
    .map((e) => join(e.parentPath, e.name));
}

/** The port of a `HOST:PORT` bind-address flag. */
function boundPort(c: Container, flag: string): number {
  const value = flagValue(c.args ?? [], flag);
  assert.ok(value, `${c.name}: ${flag} is set explicitly (ports, probes and policies depend on it)`);
  return Number(/:(\d+)$/.exec(value)?.[1]);
}

function namedPort(c: Container, port: string | number | undefined): number | undefined {
  return typeof port === 'number' ? port : c.ports?.find((p) => p.name === port)?.containerPort;
}

const matches = (selector: Record<string, string> | undefined, labels: Record<string, string>) =>
  !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

describe('RBAC in deploy/base', () => {
  const rbacFiles = resourceFiles(BASE_DIR).filter((f) => readDocuments(f).some((d) => /Role$/.test(String(d.get('kind')))));

  it('justifies every verb in a comment on its line, and grants no wildcard', () => {
    assert.ok(rbacFiles.length >= 2, 'controller and sidecar RBAC files');
    let verbs = 0;
    for (const file of rbacFiles) {
      for (const doc of readDocuments(file)) {
        if (!/^(Cluster)?Role$/.test(String(doc.get('kind')))) continue;
        const rules = doc.get('rules');
        assert.ok(isSeq(rules), `${relative(PACKAGE_ROOT, file)}: rules`);
        for (const rule of rules.items) {
          assert.ok(isMap(rule));
          const where = `${relative(PACKAGE_ROOT, file)} ${String(doc.getIn(['metadata', 'name']))} ${JSON.stringify((rule.toJSON() as { resources: string[] }).resources)}`;
          for (const key of ['apiGroups', 'resources', 'verbs']) {
            const list = rule.get(key);
            assert.ok(isSeq(list) && list.items.length > 0, `${where}: ${key} is a non-empty list`);
            for (const item of list.items) assert.ok(isScalar(item) && item.value !== '*', `${where}: no wildcard in ${key}`);
          }
          assert.equal(rule.get('nonResourceURLs'), undefined, `${where}: no non-resource URLs`);
          for (const verb of (rule.get('verbs') as { items: unknown[] }).items) {
            assert.ok(isScalar(verb));
            assert.ok((verb.comment ?? '').trim().length >= 15, `${where}: verb ${String(verb.value)} has no justification comment on its line`);
            verbs++;
          }
        }
      }
    }
    assert.ok(verbs > 0);
  });

  it("binds each role to its workload's own ServiceAccount", () => {
    const bindings = objects.filter((o) => /RoleBinding$/.test(o.kind)) as (KubeObject & { roleRef: { kind: string; name: string }; subjects: { kind: string; name: string }[] })[];
    for (const b of bindings) {
      findObject(objects, b.roleRef.kind, b.roleRef.name);
      assert.deepEqual(
        b.subjects.map((s) => s.kind),
        ['ServiceAccount'],
        `${b.metadata.name}: one ServiceAccount subject`,
      );
      findObject(objects, 'ServiceAccount', b.subjects[0]!.name);
    }
    assert.equal(controller.spec.template.spec.serviceAccountName, CONTROLLER.serviceAccount);
    assert.equal(sidecar.spec.template.spec.serviceAccountName, SIDECAR.serviceAccount);
    // The Lease the controller elects on is the one name the Role lets it read and renew.
    const role = findObject<KubeObject & { rules: { resources: string[]; resourceNames?: string[]; verbs: string[] }[] }>(objects, 'Role', 'agent-operator-controller-leader-election');
    const named = role.rules.filter((r) => r.resourceNames);
    assert.deepEqual(
      named.map((r) => [r.resourceNames, r.verbs]),
      [[[flagValue(containerOf(controller).args ?? [], '--leader-election-id')], ['get', 'update']]],
    );
    // Leader election is namespaced: a Role, never a ClusterRole, holds leases.
    for (const role of objects.filter((o) => o.kind === 'ClusterRole') as (KubeObject & { rules: { resources: string[] }[] })[]) {
      assert.ok(!role.rules.some((r) => r.resources.includes('leases')), `${role.metadata.name}: leases only through a namespaced Role`);
    }
  });
});

describe('kustomizations in deploy/', () => {
  it('lists every manifest file of the base and of each component (nothing silently left out)', () => {
    const kustomizationNames = new Set(['kustomization.yaml', 'kustomization.yml']);
    const dirs = [BASE_DIR, ...readdirSync(join(DEPLOY_DIR, 'components')).map((c) => join(DEPLOY_DIR, 'components', c))];
    for (const dir of dirs) {
      const k = readKustomization(dir);
      const listed = new Set([...(k.resources ?? []), ...(k.patches ?? []).flatMap((p) => (p.path ? [p.path] : []))].map((r) => join(dir, r)));
      for (const file of yamlFilesUnder(dir).filter((f) => !kustomizationNames.has(f.split('/').at(-1)!))) {
        assert.ok(listed.has(file), `${relative(PACKAGE_ROOT, file)} is not listed in its kustomization`);
      }
    }
  });

  it('includes the generated CRDs without copying them: crds/Kustomization lists exactly the files src/api generates', () => {
    assert.ok(readKustomization(BASE_DIR).resources?.includes('../../crds'));
    assert.deepEqual([...(readKustomization(CRDS_DIR).resources ?? [])].sort(), Object.keys(CRD_FILES).sort());
    assert.deepEqual(
      yamlFilesUnder(DEPLOY_DIR).filter((f) => readFileSync(f, 'utf8').includes('kind: CustomResourceDefinition')),
      [],
      'no CRD copy in deploy/',
    );
  });

  it('sets the one image, tagged with the package version, for every workload', () => {
    const k = readKustomization(BASE_DIR);
    assert.deepEqual(k.images, [{ name: 'agent-operator', newName: 'ghcr.io/agent-operator/agent-operator', newTag: `v${pkg.version}` }]);
    for (const w of [controller, sidecar]) assert.equal(containerOf(w).image, 'agent-operator', `${w.metadata.name}: the name kustomize's images: rewrites`);
  });
});

describe('the node policies in deploy/admission', () => {
  const admission = resourceFiles(join(DEPLOY_DIR, 'admission')).flatMap((f) => readDocuments(f).map((d) => d.toJS() as KubeObject));
  /** The policies that hold the nodes to their own node and keep the binding the controller's (not the GitOps warning). */
  const NODE_POLICIES = ['agent-operator-binding', 'agent-operator-agentnode-registration', 'agent-operator-node-agents', 'agent-operator-node-agentnodes', 'agent-operator-node-events'];
  const policies = admission.filter((o) => o.kind === 'ValidatingAdmissionPolicy' && NODE_POLICIES.includes(o.metadata.name)) as (KubeObject & { spec: Record<string, unknown> })[];
  const objects = [...baseObjects(), ...admission];
  const text = (o: unknown) => JSON.stringify(o);

  it('binds every one, with Deny, failing closed', () => {
    assert.deepEqual(policies.map((p) => p.metadata.name).sort(), [...NODE_POLICIES].sort());
    const bindings = objects.filter((o) => o.kind === 'ValidatingAdmissionPolicyBinding') as (KubeObject & { spec: { policyName: string; validationActions: string[] } })[];
    for (const p of policies) {
      assert.equal(p.spec.failurePolicy, 'Fail', p.metadata.name);
      const b = bindings.find((x) => x.spec.policyName === p.metadata.name);
      assert.deepEqual(b?.spec.validationActions, ['Deny'], `${p.metadata.name} is bound with Deny`);
    }
  });

  it("names the identities as deploy/ creates them: the ServiceAccounts' usernames", () => {
    const namespace = readKustomization(BASE_DIR).namespace;
    const sas = new Set(objects.filter((o) => o.kind === 'ServiceAccount').map((o) => `system:serviceaccount:${namespace}:${o.metadata.name}`));
    for (const p of policies) {
      const named = text(p.spec).match(/system:serviceaccount:[a-z0-9-]+:[a-z0-9-]+/g) ?? [];
      assert.ok(named.length > 0, `${p.metadata.name} names an identity`);
      for (const n of named) assert.ok(sas.has(n), `${p.metadata.name} names ${n}, which deploy/ does not create`);
    }
  });

  it("keeps a node sidecar off exactly the controller's status fields, and every other field is the node's", () => {
    const p = policies.find((x) => x.metadata.name === 'agent-operator-node-agents');
    assert.ok(p);
    const guarded = [...new Set([...text(p.spec).matchAll(/object\.\?status\.\?(\w+) == oldObject/g)].map((m) => m[1]))].sort();
    assert.deepEqual(guarded, [...CONTROLLER_STATUS_FIELDS].sort());
    const all = Object.keys(agentStatus.shape).sort();
    // The node's child intake (src/sidecar/children.ts) writes the requests an agent made for children.
    const childRequests = ['spawnRequests', 'stopRequests'];
    assert.deepEqual([...CONTROLLER_STATUS_FIELDS, ...SIDECAR_STATUS_FIELDS, ...childRequests].sort(), all, 'each status field has one writer');
  });
});

describe('the controller Deployment', () => {
  const c = containerOf(controller);
  const pod = controller.spec.template.spec;

  it('runs 2 leader-elected replicas, spread over nodes, with the Lease namespace from the downward API', () => {
    assert.equal(controller.spec.replicas, 2);
    assert.equal(c.args?.[0], 'controller');
    assert.ok(c.args?.includes('--leader-elect'));
    assert.deepEqual(c.env?.find((e) => e.name === 'POD_NAMESPACE')?.valueFrom, { fieldRef: { fieldPath: 'metadata.namespace' } });
    const spread = pod.topologySpreadConstraints?.find((t) => t.topologyKey === 'kubernetes.io/hostname');
    assert.ok(spread || pod.affinity, 'topology spread or anti-affinity');
    if (spread) assert.ok(matches(spread.labelSelector?.matchLabels, controller.spec.template.metadata.labels), 'the spread constraint selects the controller pods');
    assert.ok(matches(controller.spec.selector.matchLabels, controller.spec.template.metadata.labels));
  });

  it('probes /healthz and /readyz on the probe address, exposes the metrics address, and sets resources', () => {
    const probePort = boundPort(c, '--health-probe-bind-address');
    assert.equal(probePort, 8081);
    assert.equal(boundPort(c, '--metrics-bind-address'), 8080);
    assert.deepEqual([c.livenessProbe?.httpGet?.path, namedPort(c, c.livenessProbe?.httpGet?.port)], ['/healthz', probePort]);
    assert.deepEqual([c.readinessProbe?.httpGet?.path, namedPort(c, c.readinessProbe?.httpGet?.port)], ['/readyz', probePort]);
    assert.equal(namedPort(c, 'metrics'), 8080);
    assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory && c.resources.limits?.memory);
  });

  it('is hardened: non-root, read-only root filesystem, no privilege escalation, no capabilities, RuntimeDefault seccomp', () => {
    assert.equal(pod.securityContext?.runAsNonRoot, true);
    assert.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault');
    assert.equal(c.securityContext?.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext?.allowPrivilegeEscalation, false);
    assert.deepEqual(c.securityContext?.capabilities, { drop: ['ALL'] });
  });

  it('has a PodDisruptionBudget, a metrics Service and a NetworkPolicy that all select its pods', () => {
    const labels = controller.spec.template.metadata.labels;
    const pdb = findObject<KubeObject & { spec: { minAvailable: number; selector: { matchLabels: Record<string, string> } } }>(objects, 'PodDisruptionBudget', CONTROLLER.name);
    assert.equal(pdb.spec.minAvailable, 1);
    assert.ok(matches(pdb.spec.selector.matchLabels, labels));
    const svc = objects.find((o) => o.kind === 'Service') as KubeObject & { spec: { selector: Record<string, string>; ports: { targetPort: string | number }[] } };
    assert.ok(matches(svc.spec.selector, labels));
    assert.deepEqual(
      svc.spec.ports.map((p) => namedPort(c, p.targetPort)),
      [8080],
    );
    const np = findObject<
      KubeObject & { spec: { podSelector: { matchLabels: Record<string, string> }; policyTypes: string[]; ingress: { ports: { port: number }[] }[]; egress: { ports: { port: number }[] }[] } }
    >(objects, 'NetworkPolicy', CONTROLLER.name);
    assert.ok(matches(np.spec.podSelector.matchLabels, labels));
    assert.deepEqual(np.spec.policyTypes, ['Ingress', 'Egress']);
    assert.deepEqual(np.spec.ingress.flatMap((r) => r.ports.map((p) => p.port)).sort(), [8080, 8081], 'ingress to the metrics and probe ports only');
    assert.deepEqual(
      np.spec.egress.flatMap((r) => r.ports.map((p) => p.port)).sort((a, b) => a - b),
      [53, 53, 443, 6443],
      'egress to the API server and DNS only',
    );
  });
});

describe('the sidecar DaemonSet', () => {
  const c = containerOf(sidecar);
  const pod = sidecar.spec.template.spec;
  const mountOf = (path: string | undefined) => c.volumeMounts?.find((m) => m.mountPath === path);
  const volume = (name: string | undefined) => pod.volumes?.find((v) => v.name === name);

  it('runs the sidecar under supervise, so a sidecar crash does not end the container and its agents', () => {
    assert.deepEqual(c.args?.slice(0, 2), ['supervise', 'sidecar']);
    const liveness = c.livenessProbe!;
    const toleratedMs = (liveness.periodSeconds ?? 10) * (liveness.failureThreshold ?? 3) * 1000;
    assert.ok(toleratedMs > DEFAULT_RESTART_POLICY.maxDelayMs + 15_000, `liveness gives up after ${toleratedMs} ms, before supervise's longest restart`);
  });

  it('names its node from the downward API', () => {
    assert.equal(flagValue(c.args ?? [], '--node-name'), '$(NODE_NAME)');
    assert.deepEqual(c.env?.find((e) => e.name === 'NODE_NAME')?.valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
  });

  it('keeps --root on a hostPath and --archive-dir on the separate "archive" volume', () => {
    const root = volume(mountOf(flagValue(c.args ?? [], '--root'))?.name);
    assert.deepEqual(root?.hostPath, { path: '/var/lib/agent-operator', type: 'DirectoryOrCreate' });
    const archive = volume(mountOf(flagValue(c.args ?? [], '--archive-dir'))?.name);
    assert.equal(archive?.name, 'archive', 'the volume the archive-pvc component replaces');
    assert.deepEqual(archive.hostPath, { path: '/var/lib/agent-operator-archive', type: 'DirectoryOrCreate' });
    // Every writable path is a volume: the root filesystem is read-only.
    assert.equal(c.securityContext?.readOnlyRootFilesystem, true);
    for (const m of c.volumeMounts ?? []) assert.ok(volume(m.name), `mount ${m.mountPath} has a volume`);
  });

  it('probes its probe address, exposes metrics, sets resources, and has time to clean up on termination', () => {
    const probePort = boundPort(c, '--health-probe-bind-address');
    assert.equal(probePort, 8091);
    assert.equal(boundPort(c, '--metrics-bind-address'), 8090);
    assert.deepEqual([c.livenessProbe?.httpGet?.path, namedPort(c, c.livenessProbe?.httpGet?.port)], ['/healthz', probePort]);
    assert.deepEqual([c.readinessProbe?.httpGet?.path, namedPort(c, c.readinessProbe?.httpGet?.port)], ['/readyz', probePort]);
    assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory && c.resources.limits?.memory);
    // Stopping agents takes up to their grace period (default DEFAULTS.gracePeriodSeconds), then
    // flushing and archiving their logs: leave several times that.
    assert.ok((pod.terminationGracePeriodSeconds ?? 30) >= 6 * DEFAULTS.gracePeriodSeconds);
  });

  it('adds exactly the capabilities measured as needed, each with the operation that needs it on its line, and the sidecar checks for the same set', () => {
    // Measured by running this DaemonSet in runc without each one (docs/install.md, "What each
    // privilege is for, measured"): take one away here and the sandbox fails where its comment says.
    const measured = ['SETUID', 'SETGID', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'KILL'];
    assert.deepEqual(c.securityContext?.capabilities, { drop: ['ALL'], add: measured });
    assert.deepEqual(
      Object.keys(SANDBOX_CAPABILITIES),
      measured.map((cap) => `CAP_${cap}`),
    );
    const file = join(BASE_DIR, 'sidecar', 'daemonset.yaml');
    const add = readDocuments(file)[0]!.getIn(['spec', 'template', 'spec', 'containers', 0, 'securityContext', 'capabilities', 'add']);
    assert.ok(isSeq(add), `${relative(PACKAGE_ROOT, file)}: capabilities.add is a list`);
    for (const cap of add.items) {
      assert.ok(isScalar(cap));
      assert.ok((cap.comment ?? '').trim().length >= 30, `${relative(PACKAGE_ROOT, file)}: capability ${String(cap.value)} has no comment on its line saying what needs it`);
    }
  });

  it('is replaced only when its pod is deleted, since its agents die with it', () => {
    assert.deepEqual((sidecar.spec as { updateStrategy?: unknown }).updateStrategy, { type: 'OnDelete' });
  });

  it("runs agents sandboxed, as root of its own user namespace with the sandbox's few capabilities and the shipped seccomp profile", () => {
    assert.equal(pod.securityContext?.runAsUser, 0);
    assert.equal(pod.hostUsers, false, 'root of the pod is nobody on the node');
    const seccomp = pod.securityContext.seccompProfile!;
    assert.equal(seccomp.type, 'Localhost');
    const profile = JSON.parse(readFileSync(join(DEPLOY_DIR, 'seccomp', seccomp.localhostProfile!), 'utf8')) as {
      defaultAction: string;
      syscalls: { names: string[]; action: string; includes?: object; excludes?: object }[];
    };
    assert.equal(profile.defaultAction, 'SCMP_ACT_ERRNO', 'an allow-list');
    const allowed = new Set(profile.syscalls.filter((r) => r.action === 'SCMP_ACT_ALLOW' && !Object.keys(r.includes ?? {}).length).flatMap((r) => r.names));
    for (const call of ['unshare', 'mount', 'umount2', 'pivot_root', 'clone', 'clone3']) assert.ok(allowed.has(call), `${call} is allowed (bwrap needs it)`);
    for (const call of ['kexec_load', 'init_module', 'bpf', 'perf_event_open']) assert.ok(!allowed.has(call), `${call} stays refused`);
    assert.equal(c.securityContext?.privileged, false);
    assert.equal(c.securityContext?.allowPrivilegeEscalation, false);
    assert.equal(c.securityContext?.procMount, 'Unmasked');
    assert.ok(!(c.args ?? []).some((a) => a.startsWith('--sandbox')), 'the default sandbox (bwrap), never --sandbox=none');
    const range = (c.args ?? [])
      .find((a) => a.startsWith('--agent-uid-range='))!
      .split('=')[1]!
      .split('-')
      .map(Number);
    assert.ok(range[0]! > 0 && range[1]! < 65_536, 'agent uids within the 65536 ids the kubelet maps for the pod');
  });

  it('accepts ingress to its metrics and probe ports only (its report endpoint is on loopback)', () => {
    const np = findObject<KubeObject & { spec: { podSelector: { matchLabels: Record<string, string> }; policyTypes: string[]; ingress: { ports: { port: number }[] }[] } }>(
      objects,
      'NetworkPolicy',
      SIDECAR.name,
    );
    assert.ok(matches(np.spec.podSelector.matchLabels, sidecar.spec.template.metadata.labels));
    assert.ok(np.spec.policyTypes.includes('Ingress'));
    assert.deepEqual(np.spec.ingress.flatMap((r) => r.ports.map((p) => p.port)).sort(), [8090, 8091]);
  });
});

describe('isRbacRefusal', () => {
  const cases: { name: string; line: string; refused: boolean }[] = [
    {
      name: 'the RBAC authorizer refusing a verb',
      line: 'agents.orchestrator.dev "x" is forbidden: User "system:serviceaccount:agent-operator-system:agent-operator-sidecar" cannot patch resource "agents/status" in API group "orchestrator.dev" in the namespace "a"',
      refused: true,
    },
    {
      name: 'a cluster-scoped refusal',
      line: 'User "system:serviceaccount:s:c" cannot list resource "secrets" in API group "" at the cluster scope',
      refused: true,
    },
    {
      name: 'a namespace being terminated (admission, not the role)',
      line: 'events.events.k8s.io "a.1" is forbidden: unable to create new content in namespace crd-columns-1 because it is being terminated',
      refused: false,
    },
    { name: 'a line that merely says forbidden', line: '{"msg":"forbidden characters in the prompt are kept as they are"}', refused: false },
  ];
  for (const c of cases) it(c.name, () => assert.equal(isRbacRefusal(c.line), c.refused));
});
