/**
 * The AgentNode API: one cluster-scoped object per node sidecar, like a kubelet's Node. The sidecar
 * registers it and heartbeats its status; admins see readiness, capacity and the running count with
 * `kubectl get agentnodes`, and can cordon a node with spec.unschedulable.
 */
import { z } from 'zod';
import { conditions, objectMeta, timestamp } from './fields.js';

export const agentNodeSpec = z
  .object({
    unschedulable: z.boolean().optional().meta({ description: 'Cordon: no new Agents are scheduled onto this node; running ones carry on.' }),
  })
  .strict()
  .meta({ description: 'Admin-controlled settings of the node.' });

export const agentNodeStatus = z
  .object({
    capacity: z.int().min(0).optional().meta({ description: 'How many agents the node runs at once.' }),
    running: z.int().min(0).optional().meta({ description: 'Agent sessions alive on the node at the last heartbeat.' }),
    lastHeartbeatTime: timestamp('When the node sidecar last reported in.').optional(),
    sidecarVersion: z.string().max(64).optional().meta({ description: 'Version of the node sidecar.' }),
    conditions,
  })
  .strict()
  .meta({ description: 'Observed state of the node, written by its sidecar (heartbeat) and the controller (readiness).' });

export const agentNodeSchema = z
  .object({
    apiVersion: z.string().optional(),
    kind: z.string().optional(),
    metadata: objectMeta.optional(),
    spec: agentNodeSpec.optional(),
    status: agentNodeStatus.optional(),
  })
  .strict();

export type AgentNode = z.infer<typeof agentNodeSchema>;
export type AgentNodeStatus = z.infer<typeof agentNodeStatus>;
