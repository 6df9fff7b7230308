/** The node-side effect layer the sidecar drives: workspaces, tmux sessions, processes, cleanup, sweeping. */
export { archiveLocation, inspectArchive, type ArchiveLocation, type Manifest } from './archive.js';
export { cleanupAgent, type CleanupOptions } from './cleanup.js';
export { expandArgs, expandEnv, type EnvEntry } from './expand.js';
export { LAUNCH_EXIT } from './launcher.js';
export { launch, platformEnv, type LaunchOptions, type LaunchResult } from './launch.js';
export { listSessions, observeSession, type SessionListing, type SessionObservation } from './observe.js';
export { findMarkerProcesses, listProcesses } from './procfs.js';
export { ORPHANED_TRIGGER, sweepNode, type SweepOptions, type SweepResult } from './sweep.js';
export { killServer, sessionNameFor } from './tmux.js';
export { isAgentUid, listWorkspaces, readAgentRecord, workspacePaths, type AgentRecord, type WorkspacePaths } from './workspace.js';
export { checkLayout, checkTraversable, nodeSandbox, probeSandbox, SANDBOX_MODES, type NodeSandbox, type SandboxMode } from './sandbox.js';
export { DEFAULT_UID_RANGE, parseUidRange } from './uids.js';
