/** The Agent phase model: which phases are active and which are final. */

export const ACTIVE_PHASES = ['Pending', 'Scheduled', 'Running', 'Working', 'Blocked'] as const;
export const TERMINAL_PHASES = ['Completed', 'Failed', 'Error', 'Terminated'] as const;
export const PHASES = [...ACTIVE_PHASES, ...TERMINAL_PHASES] as const;

export type TerminalPhase = (typeof TERMINAL_PHASES)[number];
export type Phase = (typeof PHASES)[number];

export function isTerminalPhase(phase: string | undefined): phase is TerminalPhase {
  return (TERMINAL_PHASES as readonly string[]).includes(phase ?? '');
}

/** States an agent may report about itself from inside its session. */
export const REPORTED_STATES = ['working', 'blocked', 'completed', 'failed', 'error'] as const;
export type ReportedState = (typeof REPORTED_STATES)[number];

export function isFinalReport(state: string | undefined): boolean {
  return state === 'completed' || state === 'failed' || state === 'error';
}
