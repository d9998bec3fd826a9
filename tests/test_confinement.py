"""Real attacks against the OS-level confinement (sandbox/boundary/confine.py).

Every attack runs as plain, unrestricted Python -- real ``os``, ``socket``,
``ctypes``, raw ``syscall(2)`` -- through ``run_confined``, and must fail *because
of the confinement* (the errno the kernel mechanism gives: EPERM from the seccomp
filter, EACCES from Landlock) with its side effect absent.

Each test runs twice: ``root`` (the test process is root; the confined child drops
to its own uid) and ``user`` (an ordinary user: when the tests run as root a
temporary user is created with ``useradd`` and the attack runs as that user through
``/usr/bin/python3``; otherwise the tests' own user). Both go through a *runner*
process that starts with a secret in its environment, owns the victim processes,
and calls ``confine.run_confined`` from the bare ``boundary`` package, loaded as a worker
loads it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OS-level confinement is Linux-only")

if sys.platform.startswith("linux"):
    from sandbox.boundary import confine as confine_mod

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = str(REPO / "sandbox" / "boundary")
SECRET = "rlm-secret-" + uuid.uuid4().hex
EPERM, EACCES = 1, 13
USER_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")

# The runner: starts victims, calls run_confined (or confine itself), reports JSON.
RUNNER = r'''
import json, os, subprocess, sys, time, types
spec = json.loads(sys.stdin.read())
for entry in spec["sys_path"]:
    if entry not in sys.path:
        sys.path.append(entry)
pkg = types.ModuleType("boundary"); pkg.__path__ = [spec["package_dir"]]; sys.modules["boundary"] = pkg
from boundary.confine import confine, run_confined
SLEEPER = ("import sys, types; pkg = types.ModuleType('boundary'); pkg.__path__ = [sys.argv[1]]; "
           "sys.modules['boundary'] = pkg; sys.path += sys.argv[2].split(':'); import time; "
           "from boundary.confine import confine; confine(memory_limit_mb=256); print('ready', flush=True); "
           "time.sleep(60)")


def start_victim(kind):
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL,
             "start_new_session": True}
    if kind == "plain":  # an ordinary process of the runner's uid
        return subprocess.Popen([sys.executable, "-I", "-c", "print('ready', flush=True); import time; "
                                 "time.sleep(60)"], **quiet)
    if kind == "sandbox":  # another confined sandbox process
        return subprocess.Popen([sys.executable, "-I", "-c", SLEEPER, spec["package_dir"], ":".join(sys.path)],
                                env={}, **quiet)
    return None


def direct(report):
    status = os.open("/proc/self/status", os.O_RDONLY)  # opened before: readable after confine()
    report["before"] = os.pread(status, 65536, 0).decode()
    report["info"] = confine(memory_limit_mb=256)
    report["after"] = os.pread(status, 65536, 0).decode()
    report["pid"] = os.getpid()
    try:
        os.open("/etc/hostname", os.O_RDONLY)
        report["read_etc"] = "allowed"
    except OSError as exc:
        report["read_etc"] = exc.errno
    try:
        confine(memory_limit_mb=256)
        report["second"] = "allowed"
    except Exception as exc:
        report["second"] = type(exc).__name__


def run(victim):
    report = {"runner_pid": os.getpid(), "runner_uid": os.getuid()}
    if victim is not None:
        assert victim.stdout.readline().strip() == b"ready"
    if spec["direct"]:
        direct(report)
        return report
    code = spec["code"].replace("VICTIM_PID", str(victim.pid if victim else -999999))
    result = run_confined(code, timeout=spec["timeout"], memory_limit_mb=spec["memory_limit_mb"])
    report.update(returncode=result.returncode, stdout=result.stdout, stderr=result.stderr,
                  timed_out=result.timed_out)
    if victim is not None:
        try:
            victim.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        report["victim_alive"] = victim.poll() is None
        try:
            with open(f"/proc/{victim.pid}/status") as fh:
                report["victim_tracer"] = [l.split()[1] for l in fh if l.startswith("TracerPid:")][0]
        except OSError:
            report["victim_tracer"] = None
    return report


victim = start_victim(spec["victim"])
try:
    report = run(victim)
finally:
    if victim is not None:
        victim.kill()
        victim.wait()
print(json.dumps(report))
'''

# Helpers every attack starts with: report(label, fn) prints one "@@" JSON line per attempt.
PRELUDE = r'''
import ctypes, errno, json, os, signal, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"x86_64": {"kill": 62, "tgkill": 234, "ptrace": 101, "socket": 41, "clone": 56, "execve": 59},
      "aarch64": {"kill": 129, "tgkill": 131, "ptrace": 117, "socket": 198, "clone": 220, "execve": 221},
      }[os.uname().machine]

def report(label, fn):
    try:
        value = fn()
    except BaseException as exc:
        out = {"label": label, "ok": False, "type": type(exc).__name__, "errno": getattr(exc, "errno", None),
               "message": str(exc)[:300]}
    else:
        out = {"label": label, "ok": True, "value": repr(value)[:300]}
    print("@@" + json.dumps(out), flush=True)

def raw(name, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(NR[name], *[ctypes.c_long(a) for a in args])
    if ret == 0 and name == "clone":
        os._exit(0)  # a child, had the clone gone through
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret
'''


@dataclass
class Harness:
    """One way of running attacks: as root, or as an ordinary user."""

    mode: str
    python: str
    uid: int
    gid: int
    home: str
    base: Path
    popen_ids: dict = field(default_factory=dict)
    home_file: bool = False  # the home holds a 0600 notes.txt of this user

    @property
    def secret600(self) -> Path:
        return self.base / "secret600.txt"

    @property
    def secret644(self) -> Path:
        return self.base / "secret644.txt"

    @property
    def writable(self) -> Path:
        return self.base / "writable"

    def _spec(self, **extra) -> dict:
        spec = {"sys_path": confine_mod._dependency_dirs(), "package_dir": PACKAGE_DIR, "victim": None,
                "direct": False, "code": "", "timeout": 20.0, "memory_limit_mb": 512}
        spec.update(extra)
        return spec

    def runner(self, **spec) -> dict:
        env = {"RLM_TEST_SECRET": SECRET, "PATH": "/usr/bin:/bin", "HOME": self.home}
        proc = subprocess.run([self.python, "-I", "-c", RUNNER], input=json.dumps(self._spec(**spec)),
                              capture_output=True, text=True, env=env, cwd=str(self.base), timeout=90,
                              **self.popen_ids)
        assert proc.returncode == 0, f"runner failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            pytest.fail(f"the runner's output is not its JSON report:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

    def attack(self, code: str, **spec) -> tuple[dict, dict]:
        """Run PRELUDE + code confined; returns (outcomes by label, the runner's report)."""
        report = self.runner(code=PRELUDE + code, **spec)
        outcomes = {}
        for line in report["stdout"].splitlines():
            if line.startswith("@@"):
                item = json.loads(line[2:])
                outcomes[item["label"]] = item
        return outcomes, report


def _expect(outcomes: dict, label: str, errnos: tuple[int, ...] = (EPERM,), exc_type: str | None = None) -> None:
    item = outcomes.get(label)
    assert item is not None, f"{label}: no outcome reported; got {sorted(outcomes)}"
    assert not item["ok"], f"{label}: the attack succeeded: {item}"
    if exc_type is not None:
        assert item["type"] == exc_type, f"{label}: expected {exc_type}, got {item}"
    else:
        assert item["errno"] in errnos, f"{label}: expected errno {errnos}, got {item}"


# -- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _supported():
    try:
        confine_mod.check_support()
    except confine_mod.ConfinementUnavailable as exc:
        pytest.skip(f"confinement unavailable here: {exc}")


def _make_base(uid: int, gid: int, home_file: Path | None) -> Path:
    base = Path(tempfile.mkdtemp(prefix="rlm-confine-test-", dir="/tmp"))
    base.chmod(0o755)
    (base / "secret600.txt").write_text(SECRET)
    (base / "secret600.txt").chmod(0o600)
    (base / "secret644.txt").write_text(SECRET)
    (base / "secret644.txt").chmod(0o644)
    (base / "writable").mkdir()
    (base / "writable").chmod(0o777)
    (base / "writable" / "existing.txt").write_text("original")
    (base / "writable" / "existing.txt").chmod(0o666)
    for path in [base, *base.rglob("*")]:
        os.chown(path, uid, gid)
    if home_file is not None:
        home_file.write_text(SECRET)
        home_file.chmod(0o600)
        os.chown(home_file, uid, gid)
    return base


def _user_python(popen_ids: dict) -> tuple[str | None, str]:
    check = ("import sys; sys.path += sys.argv[1:]; import pyseccomp, landlockpy; "
             "assert sys.version_info >= (3, 10)")
    why = "no usable python found"
    for python in USER_PYTHONS:
        if not os.path.exists(python):
            continue
        proc = subprocess.run([python, "-I", "-c", check, *confine_mod._dependency_dirs()], capture_output=True,
                              text=True, env={}, cwd="/", **popen_ids)
        if proc.returncode == 0:
            return python, ""
        why = f"{python} cannot import the bindings as that user: {proc.stderr.strip()[-300:]}"
    return None, why


@pytest.fixture(scope="module", params=["root", "user"])
def harness(request):
    mode = request.param
    is_root = os.geteuid() == 0
    if mode == "root":
        if not is_root:
            pytest.skip("the root runs need the tests to run as root")
        base = _make_base(0, 0, None)
        yield Harness(mode, sys.executable, 0, 0, "/root", base)
        shutil.rmtree(base, ignore_errors=True)
        return
    if not is_root:  # the tests' own user is the ordinary user
        base = _make_base(os.getuid(), os.getgid(), None)
        yield Harness(mode, sys.executable, os.getuid(), os.getgid(), os.path.expanduser("~"), base)
        shutil.rmtree(base, ignore_errors=True)
        return
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("running as root without useradd/userdel: no way to switch to an ordinary user")
    name = "rlmconf" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/usr/sbin/nologin", name], check=True,
                   capture_output=True)
    try:
        import pwd
        entry = pwd.getpwnam(name)
        popen_ids = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        python, why = _user_python(popen_ids)
        if python is None:
            pytest.skip(why)
        base = _make_base(entry.pw_uid, entry.pw_gid, Path(entry.pw_dir) / "notes.txt")
        yield Harness(mode, python, entry.pw_uid, entry.pw_gid, entry.pw_dir, base, popen_ids, home_file=True)
        shutil.rmtree(base, ignore_errors=True)
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def _no_connection(listener: socket.socket) -> bool:
    ready, _, _ = select.select([listener], [], [], 0.3)
    return not ready


# -- network --------------------------------------------------------------------------------

def test_tcp_loopback_connect_is_refused(harness):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        outcomes, _ = harness.attack(f"""
report("create_connection", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2))
report("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {port})))
report("ipv6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
report("raw_socket_syscall", lambda: raw("socket", 2, 1, 0))
report("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
""")
        for label in ("create_connection", "udp", "ipv6", "raw_socket_syscall", "netlink"):
            _expect(outcomes, label)
        assert _no_connection(listener), "the listener saw a connection"
    finally:
        listener.close()


def test_unix_sockets_are_refused(harness):
    path = harness.base / "listener.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o777)
    listener.listen()
    abstract_name = "\0rlm-confine-test-" + uuid.uuid4().hex
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(abstract_name)
    abstract.listen()
    try:
        outcomes, _ = harness.attack(f"""
def connect(address):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(address)
    return s
report("unix_path", lambda: connect({str(path)!r}))
report("unix_abstract", lambda: connect({abstract_name!r}))
report("socketpair", lambda: socket.socketpair())
""")
        for label in ("unix_path", "unix_abstract", "socketpair"):
            _expect(outcomes, label)
        assert _no_connection(listener), "the unix listener saw a connection"
        assert _no_connection(abstract), "the abstract unix listener saw a connection"
    finally:
        listener.close()
        abstract.close()


# -- reading --------------------------------------------------------------------------------

def test_private_files_are_unreadable(harness):
    outcomes, report = harness.attack(f"""
report("read_0600", lambda: open({str(harness.secret600)!r}).read())
report("read_0644", lambda: open({str(harness.secret644)!r}).read())
report("os_open_0644", lambda: os.read(os.open({str(harness.secret644)!r}, os.O_RDONLY), 100))
report("home_file", lambda: open(os.path.join({harness.home!r}, "notes.txt")).read())
report("etc_passwd", lambda: open("/etc/passwd").read())
""")
    for label in ("read_0600", "read_0644", "os_open_0644", "etc_passwd"):
        _expect(outcomes, label, (EACCES,))
    _expect(outcomes, "home_file", (EACCES,) if harness.home_file else (EACCES, 2))  # 2: no such file there
    assert SECRET not in report["stdout"] + report["stderr"]


def test_proc_environ_of_the_test_process_is_unreadable(harness):
    outcomes, report = harness.attack("""
ppid = os.getppid()
report("parent_environ", lambda: open(f"/proc/{ppid}/environ", "rb").read())
report("parent_cmdline", lambda: open(f"/proc/{ppid}/cmdline", "rb").read())
report("self_environ", lambda: open("/proc/self/environ", "rb").read())
report("init_environ", lambda: open("/proc/1/environ", "rb").read())
report("list_proc", lambda: os.listdir("/proc"))
""")
    for label in ("parent_environ", "parent_cmdline", "self_environ", "init_environ", "list_proc"):
        _expect(outcomes, label, (EACCES,))
    assert SECRET not in report["stdout"] + report["stderr"]


def test_tmp_and_home_cannot_be_listed(harness):
    outcomes, report = harness.attack(f"""
report("list_tmp", lambda: os.listdir("/tmp"))
report("list_home", lambda: os.listdir({harness.home!r}))
report("list_base", lambda: os.listdir({str(harness.base)!r}))
report("list_root", lambda: os.listdir("/"))
report("list_cwd", lambda: os.listdir("."))
""")
    for label in ("list_tmp", "list_base", "list_root", "list_cwd"):
        _expect(outcomes, label, (EACCES,))
    _expect(outcomes, "list_home", (EACCES,) if os.path.isdir(harness.home) else (EACCES, 2))  # 2: no home
    assert "secret600.txt" not in report["stdout"]  # a listing of the base dir would name it


# -- writing --------------------------------------------------------------------------------

def test_files_cannot_be_written_created_or_removed(harness):
    writable = harness.writable
    existing = writable / "existing.txt"
    marker = "rlm-confine-" + uuid.uuid4().hex
    tmp_target = Path("/tmp") / marker
    outcomes, _ = harness.attack(f"""
w = {str(writable)!r}
report("create_tmp", lambda: open({str(tmp_target)!r}, "w").write("x"))
report("create_writable_dir", lambda: open(os.path.join(w, "new.txt"), "w").write("x"))
report("create_cwd", lambda: open("created-in-cwd.txt", "w").write("x"))
report("os_open_creat", lambda: os.open(os.path.join(w, "new2.txt"), os.O_WRONLY | os.O_CREAT, 0o666))
report("append_existing", lambda: open(os.path.join(w, "existing.txt"), "a").write("x"))
report("rdwr_existing", lambda: os.open(os.path.join(w, "existing.txt"), os.O_RDWR))
report("write_sandbox_source", lambda: open({str(Path(PACKAGE_DIR) / 'confine.py')!r}, "a"))
report("unlink", lambda: os.unlink(os.path.join(w, "existing.txt")))
report("rename", lambda: os.rename(os.path.join(w, "existing.txt"), os.path.join(w, "moved.txt")))
report("mkdir", lambda: os.mkdir(os.path.join(w, "newdir")))
report("symlink", lambda: os.symlink("/etc/passwd", os.path.join(w, "link")))
report("link", lambda: os.link(os.path.join(w, "existing.txt"), os.path.join(w, "hard")))
report("truncate", lambda: os.truncate(os.path.join(w, "existing.txt"), 0))
report("chmod", lambda: os.chmod(os.path.join(w, "existing.txt"), 0o600))
report("mkfifo", lambda: os.mkfifo(os.path.join(w, "fifo")))
""")
    for label in ("create_tmp", "create_writable_dir", "create_cwd", "os_open_creat", "append_existing",
                  "rdwr_existing", "write_sandbox_source", "unlink", "rename", "mkdir", "symlink", "link",
                  "truncate", "chmod", "mkfifo"):
        _expect(outcomes, label)
    assert not tmp_target.exists()
    assert sorted(p.name for p in writable.iterdir()) == ["existing.txt"]
    assert existing.read_text() == "original"
    assert stat.S_IMODE(existing.stat().st_mode) == 0o666


# -- other processes -------------------------------------------------------------------------

SIGNALS = """
victim = VICTIM_PID
report("kill_victim", lambda: os.kill(victim, signal.SIGTERM))
report("kill_victim_raw", lambda: raw("kill", victim, signal.SIGKILL))
report("tgkill_victim_raw", lambda: raw("tgkill", victim, victim, signal.SIGKILL))
report("kill_parent", lambda: os.kill(os.getppid(), signal.SIGTERM))
report("killpg_victim", lambda: os.killpg(victim, signal.SIGTERM))  # the victim leads its own group
"""


@pytest.mark.parametrize("victim", ["plain", "sandbox"])
def test_other_processes_cannot_be_signalled(harness, victim):
    outcomes, report = harness.attack(SIGNALS, victim=victim)
    for label in ("kill_victim", "kill_victim_raw", "tgkill_victim_raw", "kill_parent", "killpg_victim"):
        _expect(outcomes, label)
    assert report["victim_alive"], "the victim process was killed"


def test_other_processes_cannot_be_ptraced(harness):
    outcomes, report = harness.attack("""
victim = VICTIM_PID
report("ptrace_attach", lambda: raw("ptrace", 16, victim, 0, 0))
report("ptrace_seize", lambda: raw("ptrace", 0x4206, victim, 0, 0))
report("victim_mem", lambda: open(f"/proc/{victim}/mem", "rb").read(1))
""", victim="plain")
    _expect(outcomes, "ptrace_attach")
    _expect(outcomes, "ptrace_seize")
    _expect(outcomes, "victim_mem", (EACCES,))
    assert report["victim_alive"]
    assert report["victim_tracer"] == "0"


def test_exec_is_refused(harness):
    outcomes, report = harness.attack("""
report("execv", lambda: os.execv("/bin/sh", ["sh", "-c", "echo pwned"]))
report("execve_raw", lambda: raw("execve", ctypes.addressof(ctypes.create_string_buffer(b"/bin/true")), 0, 0))
report("posix_spawn", lambda: os.posix_spawn("/bin/sh", ["sh", "-c", "echo pwned"], {}))
""")
    _expect(outcomes, "execv")
    _expect(outcomes, "execve_raw")
    _expect(outcomes, "posix_spawn")
    assert "pwned" not in report["stdout"]
    assert report["returncode"] == 0


def test_fork_and_threads_are_refused(harness):
    outcomes, report = harness.attack("""
def fork():
    pid = os.fork()
    if pid == 0:
        print("CHILD-RAN", flush=True)
        os._exit(0)
    return pid
def libc_fork():
    ctypes.set_errno(0)
    pid = libc.fork()
    if pid == 0:
        print("CHILD-RAN", flush=True)
        os._exit(0)
    if pid == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return pid
import _thread
report("os_fork", fork)
report("libc_fork", libc_fork)
report("clone_raw", lambda: raw("clone", signal.SIGCHLD, 0, 0, 0, 0))
report("thread", lambda: _thread.start_new_thread(print, ("CHILD-RAN",)))
""")
    _expect(outcomes, "os_fork")
    _expect(outcomes, "libc_fork")
    _expect(outcomes, "clone_raw")
    _expect(outcomes, "thread", exc_type="RuntimeError")
    assert "CHILD-RAN" not in report["stdout"]


def test_memory_limit_holds(harness):
    outcomes, _ = harness.attack("""
report("allocate", lambda: len(bytearray(600 * 1024 * 1024)))
""", memory_limit_mb=256)
    _expect(outcomes, "allocate", exc_type="MemoryError")


# -- what must still work, and proof the confinement is on ------------------------------------

def test_ordinary_computation_works(harness):
    report = harness.runner(code="""
import datetime, json, re, statistics
print(re.sub(r"(\\d+)", r"<\\1>", "a1b22"))
print(json.dumps({"k": [1, 2.5, None]}, sort_keys=True))
print(datetime.datetime.strptime("2024-02-29 13:05", "%Y-%m-%d %H:%M").isoformat())
print(statistics.median([3, 1, 2]), round(statistics.stdev([1.0, 2.0, 4.0]), 6))
print("x" * 1_000_000)
""")
    assert report["returncode"] == 0, report["stderr"]
    lines = report["stdout"].splitlines()
    assert lines[:4] == ["a<1>b<22>", '{"k": [1, 2.5, null]}', "2024-02-29T13:05:00", "2 1.527525"]
    assert lines[4] == "x" * 1_000_000
    assert not report["timed_out"]


def test_confinement_is_really_on(harness):
    report = harness.runner(direct=True)
    before = dict(line.split(":\t", 1) for line in report["before"].splitlines() if ":\t" in line)
    after = dict(line.split(":\t", 1) for line in report["after"].splitlines() if ":\t" in line)
    assert before["Seccomp"].strip() == "0"
    assert after["Seccomp"].strip() == "2"
    assert after["Seccomp_filters"].strip() == "1"
    assert after["NoNewPrivs"].strip() == "1"
    info = report["info"]
    assert info["seccomp"] is True and info["landlock_abi"] >= 1
    if info["landlock_abi"] >= 6:
        assert info["landlock_scoped"] == 3  # signals and abstract unix sockets
    if harness.mode == "root":
        expected = confine_mod.UID_BASE + report["pid"]
        assert info["dropped_root"] and info["uid"] == expected and info["gid"] == expected
        assert after["Uid"].split() == [str(expected)] * 4
        assert after["CapEff"].strip() == "0" * 16
        assert after["Groups"].strip() == ""
    else:
        assert not info["dropped_root"] and info["uid"] == harness.uid
    assert report["read_etc"] == EACCES
    assert report["second"] == "ConfinementUnavailable"


# -- run_confined itself ---------------------------------------------------------------------

def test_timeout_kills_the_run():
    started = time.monotonic()
    result = confine_mod.run_confined("while True: pass", timeout=1.0)
    assert result.timed_out and result.returncode < 0
    assert time.monotonic() - started < 6


def test_output_is_bounded():
    result = confine_mod.run_confined("import sys\nsys.stdout.write('y' * (5 << 20))\nprint('end', file=sys.stderr)")
    assert result.returncode == 0
    assert len(result.stdout) == confine_mod.MAX_CAPTURE
    assert result.stderr == "end\n"


def test_errors_in_the_code_are_ordinary_errors():
    result = confine_mod.run_confined("raise ValueError('boom')")
    assert result.returncode == 1 and "ValueError: boom" in result.stderr


def test_default_read_paths_are_the_interpreters_own():
    paths = confine_mod.interpreter_read_paths()
    assert os.path.realpath(PACKAGE_DIR) in paths
    assert any(os.path.exists(os.path.join(p, "os.py")) for p in paths)
    for path in paths:
        assert not path.endswith(("site-packages", "dist-packages")), path
        for forbidden in ("/", "/tmp", "/proc", "/home", "/etc", os.path.expanduser("~")):
            assert path != forbidden


def test_the_repository_is_unreadable_to_confined_code():
    """Stops confined code reading the project's own files (its source, config, any secrets kept beside it)."""
    target = REPO / "pyproject.toml"
    assert target.is_file()
    result = confine_mod.run_confined(f"print(open({str(target)!r}).read()[:20])")
    assert result.returncode != 0 and "PermissionError" in result.stderr, result
    assert result.stdout == ""


def test_no_read_path_is_a_parent_of_the_boundary_package():
    """Stops a read path that opens the whole checkout (or more) around the boundary package to confined code."""
    from sandbox.boundary.loader import PACKAGE_DIR as LOADED_PACKAGE_DIR
    package = os.path.realpath(LOADED_PACKAGE_DIR)
    parents = [p for p in confine_mod.interpreter_read_paths() if package.startswith(p.rstrip("/") + "/")]
    assert parents == []


def test_unavailable_platform_names_the_opt_out(monkeypatch):
    monkeypatch.setattr(confine_mod, "_support_checked", False)
    monkeypatch.setattr(confine_mod, "_support_error", None)
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(confine_mod.ConfinementUnavailable) as info:
        confine_mod.check_support()
    assert "Linux" in str(info.value) and 'Sandbox(confinement="none")' in str(info.value)
    with pytest.raises(confine_mod.ConfinementUnavailable):
        confine_mod.run_confined("print(1)")


# -- the real worker, confined, for the host's own user ------------------------------------

WORKER_STATUS = """
import json, os, sys
from sandbox import Sandbox
with Sandbox() as sb:
    ran = sb.execute("print(sum(range(10)))").output
    status = dict(line.split(":", 1) for line in open(f"/proc/{sb.pid}/status"))
    print(json.dumps({"host_uid": os.getuid(), "ran": ran,
                      "uid": int(status["Uid"].split()[0]), "seccomp": status["Seccomp"].strip(),
                      "no_new_privs": status["NoNewPrivs"].strip()}))
"""


@pytest.fixture
def user_python(harness):
    """A python the harness user can run that imports this checkout and its dependencies: the
    venv's own when it is that user's, else a bare venv of ``harness.python`` that links them in
    (in a world-readable directory: the test's tmp_path is private to root)."""
    if harness.python == sys.executable:
        yield sys.executable
        return
    base = Path(tempfile.mkdtemp(prefix="rlm-user-venv-", dir="/tmp"))
    try:
        venv = base / "venv"
        subprocess.run([harness.python, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
        (site,) = venv.glob("lib/python3*/site-packages")
        deps = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
        (site / "rlm-checkout.pth").write_text("\n".join([str(Path(__file__).resolve().parents[1]), *deps]) + "\n")
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        yield str(venv / "bin" / "python")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_every_worker_is_confined_whoever_runs_the_host(harness, user_python):
    """Sandbox's own worker, not only run_confined: seccomp on, no_new_privs, and as root a uid
    of its own (UID_BASE + pid); as an ordinary user, that user's uid under the same walls."""
    python = user_python
    proc = subprocess.run([python, "-I", "-c", WORKER_STATUS], capture_output=True, text=True, env={},
                          cwd="/", timeout=120, **harness.popen_ids)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["ran"] == "45\n" and seen["seccomp"] == "2" and seen["no_new_privs"] == "1", seen
    if harness.mode == "root":
        assert seen["uid"] >= confine_mod.UID_BASE and seen["uid"] != seen["host_uid"]
    else:
        assert seen["uid"] == seen["host_uid"] == harness.uid
