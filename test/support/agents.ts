/** Agent objects for the tables of the pure decisions: one shape, each test adding only what its case is about. */
import type { Agent } from '../../src/api/agent.js';
import { API_VERSION, AGENT_KIND } from '../../src/api/constants.js';

export const TEST_UID = '11111111-2222-3333-4444-555555555555';

export interface AgentParts {
  spec?: Partial<Agent['spec']>;
  status?: Agent['status'];
  meta?: Partial<NonNullable<Agent['metadata']>>;
}

/** Agent `a` in namespace `ns`, generation 1, running `echo` with prompt `p`; `parts` override. */
export function testAgent(parts: AgentParts = {}): Agent {
  return {
    apiVersion: API_VERSION,
    kind: AGENT_KIND,
    metadata: { name: 'a', namespace: 'ns', uid: TEST_UID, generation: 1, ...parts.meta },
    spec: { prompt: 'p', command: ['echo'], ...parts.spec },
    status: parts.status,
  };
}
