/**
 * What agents reported, as the sidecar keeps it between the durable JSONL files and the Agent's
 * status: the latest status report and a findings summary per agent, rebuilt from the files after a
 * restart so nothing accepted is lost from status.
 */
import { readFile } from './runtime/boundedFs.js';
import type { AgentStatus } from '../api/agent.js';
import { LIMITS } from '../api/constants.js';
import { isFinalReport } from '../api/phase.js';
import { rfc3339 } from '../api/time.js';
import { findingRecordSchema, statusRecordSchema, type Finding, type StatusReport } from '../report/protocol.js';
import type { LocalFacts } from './decide.js';

export type LatestReport = NonNullable<LocalFacts['report']>;
export type FindingsSummary = NonNullable<AgentStatus['findings']>;

const MESSAGE_MAX = 1024;

export function latestReport(report: StatusReport, at: Date, previous?: LatestReport): LatestReport {
  return {
    state: report.status,
    // What spec.completionChecks counts: reports of work in progress, not the final one.
    progressReports: (previous?.progressReports ?? 0) + (isFinalReport(report.status) ? 0 : 1),
    // A report without progress keeps the last known progress.
    ...(report.progress !== undefined ? { progress: report.progress } : previous?.progress !== undefined ? { progress: previous.progress } : {}),
    ...(report.message !== undefined ? { message: report.message } : {}),
    time: rfc3339(at),
  };
}

/** Adds one finding to a summary (pure): totals per severity and the latest few. */
export function addFinding(summary: FindingsSummary | undefined, f: Finding, at: Date): FindingsSummary {
  const bySeverity = { ...(summary?.bySeverity ?? {}) };
  bySeverity[f.severity] = (bySeverity[f.severity] ?? 0) + 1;
  const entry = { type: f.type, severity: f.severity, message: f.message.slice(0, MESSAGE_MAX), time: rfc3339(at) };
  return {
    total: (summary?.total ?? 0) + 1,
    bySeverity,
    recent: [...(summary?.recent ?? []), entry].slice(-LIMITS.recentFindings),
  };
}

function parseLines<T>(text: string, parse: (v: unknown) => { success: boolean; data?: T }): T[] {
  const out: T[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const r = parse(JSON.parse(line));
      // A line cut short by a crash or a full disk is skipped, not fatal.
      if (r.success && r.data !== undefined) out.push(r.data);
    } catch {
      /* partial line */
    }
  }
  return out;
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return '';
  }
}

/** Rebuilds an agent's report state from its workspace files. */
export async function replayReports(files: { reports: string; findings: string }): Promise<{ report?: LatestReport; findings?: FindingsSummary }> {
  const statuses = parseLines(await readText(files.reports), (v) => statusRecordSchema.safeParse(v));
  const findings = parseLines(await readText(files.findings), (v) => findingRecordSchema.safeParse(v));
  let report: LatestReport | undefined;
  for (const s of statuses) report = latestReport(s, new Date(s.at), report);
  let summary: FindingsSummary | undefined;
  for (const f of findings) summary = addFinding(summary, f, new Date(f.at));
  return { ...(report ? { report } : {}), ...(summary ? { findings: summary } : {}) };
}
