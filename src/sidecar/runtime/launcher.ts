/**
 * The first process of every agent session: a constant /bin/sh script, run by tmux as root OUTSIDE
 * the agent's sandbox. User data never appears in its text; the command and env are read from
 * files in the agent's node-owned state directory (so any bytes survive, and tmux's 16 KiB command
 * limit and `;` parsing never see them).
 *
 *   /bin/sh -c LAUNCHER_SCRIPT agent-launcher <state dir>
 *
 * 1. Makes the `gate` FIFO and blocks on it until the sidecar has attached pipe-pane and writes
 *    `go`, so the command's first byte is captured; then removes `go` (the file the sidecar wrote:
 *    its absence means "released") and the FIFO. The launcher makes the FIFO, not the sidecar: a
 *    spawn less from the sidecar's large process per launch (issue 8's budget is two).
 * 2. Reads launch/env/NNNN (`NAME=VALUE`) and launch/argv/NNNN, each value ended by a newline, then
 *    deletes launch/ (the env may hold secrets). It reads them line by line with the shell's own
 *    `read`: a `$(cat ...)` per file was two forks per file, some seventy per sandboxed launch, most
 *    of the CPU ten launches at once took. (A value is at most 128 KiB, execve's limit: a bounded
 *    number of one-byte reads.) The argv is the sandbox's prefix (see sandbox.ts; empty with --sandbox=none),
 *    then EXEC_SCRIPT with the working directory, the prompt to put on stdin (or ''), the command.
 * 3. In a subshell: drops tmux's variables (TMUX, TMUX_PANE: the way to the node's server), exports
 *    the env, opens `exec-status` on fd 3 and `sandbox.log` as stderr (the pane's stderr kept on
 *    fd 4), and execs the argv: setpriv -> bwrap -> EXEC_SCRIPT, now inside the sandbox as the
 *    agent's uid. EXEC_SCRIPT writes `started` to fd 3, takes the pane's stderr back, checks that
 *    the command can be executed, redirects stdin from the prompt when asked, closes fd 3 and execs
 *    the command (not a shell builtin: exec always runs the program, as the kubelet would).
 * 4. Records the status atomically in `exit-code` (128+N when killed by signal N). This is the
 *    launcher's own write, as root, into a directory the agent cannot see or write: an agent cannot
 *    forge its own or another agent's exit code. No `started` in exec-status means the sandbox could
 *    not be set up: a launch error quoting sandbox.log (what setpriv/bwrap said).
 *    The launcher outlives a SIGTERM/SIGHUP/SIGINT sent to the whole group (it catches them; the
 *    subshell and the command get the default actions back): were it to die first, tmux would end
 *    the pane and lose what the agent prints while it shuts down, and the exit code with it.
 *    Its own stderr goes to /dev/null, so the shell's job report ("Terminated") never lands in the
 *    agent's output.
 *
 * A command that cannot be started is a launch error: `launch-error` holds the message (also
 * printed to the pane, so it is in output.log) and the exit code says which (LAUNCH_EXIT).
 * A shell resets IFS and PPID when it starts, so the launcher hands those two to EXEC_SCRIPT under
 * other names (AO_EXEC_KEEP_*), which sets them just before the exec.
 * Known limit: dash treats OPTIND specially, so an env var named OPTIND does not reach the command.
 */

/** Exit codes of a launch error, Docker-style. */
export const LAUNCH_EXIT = {
  /** The launcher itself could not proceed (env, working directory, prompt, workspace files). */
  launcherFailed: 125,
  /** The command exists but cannot be executed (not executable, a directory). */
  notExecutable: 126,
  /** The command was not found (no such path, or not in PATH). */
  notFound: 127,
} as const;

/** Whether `exec-status` says the sandbox was set up (EXEC_SCRIPT's first line), from inside it. */
export function sandboxStarted(execStatus: string | undefined): boolean {
  return execStatus?.split('\n', 1)[0] === 'started';
}

export const LAUNCHER_ARGV0 = 'agent-launcher';

export const EXEC_ARGV0 = 'agent-exec';

// In these template literals `${'$'}{` writes a literal `${` (shell parameter expansion).
export const LAUNCHER_SCRIPT = String.raw`d=$1
rm -f -- "$d/gate"
mkfifo -m 600 -- "$d/gate" && IFS= read -r go < "$d/gate" && [ "$go" = go ] || exit 125
rm -f -- "$d/go" "$d/gate"
trap : TERM HUP INT
exec 3>&2 2>/dev/null
(
  exec 2>&3 3>&-
  fail() {
    printf '%s\n' "$2" > "$d/launch-error"
    printf 'agent-operator: %s\n' "$2" >&2
    exit "$1"
  }
  rd() {
    v=
    s=
    while IFS= read -r l; do
      v=$v$s$l
      s='
'
    done < "$1" || fail 125 "cannot read launch file $1"
    [ -z "$l" ] || fail 125 "launch file $1 is cut short"
  }
  set --
  n=0
  for f in "$d"/launch/env/*; do
    [ -f "$f" ] || continue
    rd "$f"
    set -- "$@" "$v"
    n=$((n + 1))
  done
  for f in "$d"/launch/argv/*; do
    [ -f "$f" ] || continue
    rd "$f"
    set -- "$@" "$v"
  done
  rm -rf -- "$d/launch"
  [ "$#" -gt "$n" ] || fail 125 "no command to run"
  unset TMUX TMUX_PANE USER LOGNAME TMPDIR
  i=0
  while [ "$i" -lt "$n" ]; do
    case $1 in
      IFS=* | PPID=*) k=AO_EXEC_KEEP_$1 ;;
      *) k=$1 ;;
    esac
    export "$k" || fail 125 "cannot set environment variable ${'$'}{1%%=*}"
    shift
    i=$((i + 1))
  done
  exec 3> "$d/exec-status" 4>&2 2> "$d/sandbox.log" || fail 125 "cannot open the launcher's status files"
  exec "$@"
)
code=$?
if [ ! -s "$d/launch-error" ]; then
  st=
  msg=
  if [ -f "$d/exec-status" ]; then
    { IFS= read -r st; msg=$(cat); } < "$d/exec-status"
  fi
  if [ "$st" != started ]; then
    msg="cannot set up the agent's sandbox (exit $code): $(head -c 2000 -- "$d/sandbox.log" 2>/dev/null)"
    code=125
  fi
  if [ -n "$msg" ]; then
    printf '%s\n' "$msg" > "$d/launch-error"
    [ "$st" = started ] || printf 'agent-operator: %s\n' "$msg" >&3
  fi
fi
printf '%s\n' "$code" > "$d/exit-code.tmp" && mv -f -- "$d/exit-code.tmp" "$d/exit-code"
exit "$code"`;

/**
 * Runs as the agent, inside its sandbox: `/bin/sh -c EXEC_SCRIPT agent-exec <workdir> <stdin> <command...>`
 * (see LAUNCHER_SCRIPT). Errors go to fd 3 (the launcher's exec-status) and to the pane.
 */
export const EXEC_SCRIPT = String.raw`exec 2>&4 4>&-
printf 'started\n' >&3
fail() {
  printf '%s\n' "$2" >&3
  printf 'agent-operator: %s\n' "$2" >&2
  exit "$1"
}
wd=$1
stdin=$2
shift 2
cd -- "$wd" || fail 125 "cannot change to working directory $wd"
c=$1
p=
nx=
case $c in
  */*)
    if [ -f "$c" ] && [ -x "$c" ]; then p=$c; elif [ -e "$c" ]; then nx=$c; fi
    ;;
  *)
    r=$PATH:
    while [ -n "$r" ]; do
      e=${'$'}{r%%:*}
      r=${'$'}{r#*:}
      e=${'$'}{e:-.}/$c
      if [ -f "$e" ] && [ -x "$e" ]; then p=$e; break; fi
      if [ -z "$nx" ] && [ -e "$e" ]; then nx=$e; fi
    done
    ;;
esac
if [ -z "$p" ]; then
  if [ -n "$nx" ]; then fail 126 "command not executable: $nx"; fi
  fail 127 "command not found: $c"
fi
if [ -n "$stdin" ]; then
  [ -r "$stdin" ] || fail 125 "cannot read the prompt file"
  exec < "$stdin"
fi
if [ -n "${'$'}{AO_EXEC_KEEP_IFS+x}" ]; then IFS=$AO_EXEC_KEEP_IFS; export IFS; unset AO_EXEC_KEEP_IFS; fi
if [ -n "${'$'}{AO_EXEC_KEEP_PPID+x}" ]; then PPID=$AO_EXEC_KEEP_PPID; export PPID; unset AO_EXEC_KEEP_PPID; fi
exec 3>&-
exec "$@"`;
