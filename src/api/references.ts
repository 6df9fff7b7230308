/**
 * The per-namespace opt-in that lets the node sidecars read the ConfigMaps and Secrets an Agent
 * references: one RoleBinding to ClusterRole agent-operator-references (deploy/base/sidecar/references.yaml).
 */
import { REFERENCES_CLUSTER_ROLE } from './constants.js';

/** Where deploy/ installs the operator, and the sidecars' ServiceAccount there. */
export const OPERATOR_NAMESPACE = 'agent-operator-system';
export const SIDECAR_SERVICE_ACCOUNT = 'agent-operator-sidecar';
export const CONTROLLER_SERVICE_ACCOUNT = 'agent-operator-controller';

/** The RoleBinding's name (any name works; this one says what it is for). */
export const REFERENCES_ROLE_BINDING = REFERENCES_CLUSTER_ROLE;

/** The one command that opts a namespace in (README, docs/install.md, launch errors). */
export function optInCommand(namespace: string): string {
  return `kubectl create rolebinding ${REFERENCES_ROLE_BINDING} -n ${namespace} --clusterrole=${REFERENCES_CLUSTER_ROLE} --serviceaccount=${OPERATOR_NAMESPACE}:${SIDECAR_SERVICE_ACCOUNT}`;
}

/** The object that command creates. */
export function referencesRoleBinding(namespace: string) {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: REFERENCES_ROLE_BINDING, namespace },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: REFERENCES_CLUSTER_ROLE },
    subjects: [{ kind: 'ServiceAccount', name: SIDECAR_SERVICE_ACCOUNT, namespace: OPERATOR_NAMESPACE }],
  };
}
