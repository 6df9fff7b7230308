/**
 * The first process of every agent session: a constant /bin/sh script. User data never appears in
 * its text; the command, env and working directory are read from files in the workspace (so any
 * bytes survive, and tmux's 16 KiB command limit and `;` parsing never see them).
 *
 *   /bin/sh -c LAUNCHER_SCRIPT agent-launcher <workspace dir>
 *
 * 1. Blocks on the `go` FIFO until the sidecar has attached pipe-pane, so the command's first byte
 *    is captured; then removes the FIFO (its absence means "released").
 * 2. Reads launch/env/NNNN (`NAME=VALUE`), launch/argv/NNNN, launch/workdir and launch/stdin, then
 *    deletes launch/ (the env may hold secrets).
 * 3. In a subshell: exports the env, changes directory, checks the command can be executed, redirects
 *    stdin from the prompt when asked, and execs the command (not a shell builtin: exec always runs
 *    the program, as the kubelet would).
 * 4. Records the subshell's status atomically in `exit-code` (128+N when killed by signal N).
 *    The launcher outlives a SIGTERM/SIGHUP/SIGINT sent to the whole group (it catches them; the
 *    subshell and the command get the default actions back): were it to die first, tmux would end
 *    the pane and lose what the agent prints while it shuts down, and the exit code with it.
 *    Its own stderr goes to /dev/null (the subshell gets the pane's back), so the shell's job
 *    report ("Terminated") never lands in the agent's output.
 *
 * A command that cannot be started is a launch error: `launch-error` holds the message (also
 * printed to the pane, so it is in output.log) and the exit code says which (LAUNCH_EXIT).
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

export const LAUNCHER_ARGV0 = 'agent-launcher';

// In this template literal `${'$'}{` writes a literal `${` (shell parameter expansion).
export const LAUNCHER_SCRIPT = String.raw`d=$1
IFS= read -r go < "$d/go" && [ "$go" = go ] || exit 125
rm -f -- "$d/go"
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
    v=$(cat -- "$1" && printf .) || fail 125 "cannot read launch file $1"
    v=${'$'}{v%.}
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
  rd "$d/launch/workdir"
  wd=$v
  stdin=
  if [ -f "$d/launch/stdin" ]; then stdin=prompt; fi
  rm -rf -- "$d/launch"
  [ "$#" -gt "$n" ] || fail 125 "no command to run"
  i=0
  while [ "$i" -lt "$n" ]; do
    export "$1" || fail 125 "cannot set environment variable ${'$'}{1%%=*}"
    shift
    i=$((i + 1))
  done
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
    [ -r "$d/prompt" ] || fail 125 "cannot read the prompt file"
    exec < "$d/prompt"
  fi
  exec "$@"
)
code=$?
printf '%s\n' "$code" > "$d/exit-code.tmp" && mv -f -- "$d/exit-code.tmp" "$d/exit-code"
exit "$code"`;
