"""Kernel-enforced confinement that a sandbox process applies to itself.

After :func:`confine` returns, arbitrary Python in the process -- with the real
``os`` and ``ctypes``, raw ``syscall(2)`` included -- cannot open a socket of any
family, read files outside a short list of interpreter directories, write, create,
delete or rename any file, signal or ptrace another process, exec, or fork. The
walls are five independent kernel mechanisms, enforced in this order:

1. **rlimits**: address space (the memory limit), no file growth, no core dumps.
2. **identity**: a process running as root drops to a uid/gid that no other
   sandbox shares (``UID_BASE + pid``), with no supplementary groups and
   ``RLIMIT_NPROC=0``; an ordinary user keeps its uid (the Landlock domain and
   the seccomp filter below are then its identity).
3. ``PR_SET_NO_NEW_PRIVS``: nothing can regain privileges through exec.
4. **Landlock**: every filesystem right the kernel's ABI knows is handled, and
   only READ_FILE/READ_DIR are granted, beneath the given read paths. On ABI >= 4
   TCP bind/connect are handled with no rule (denied); on ABI >= 6 the domain is
   scoped for signals and abstract unix sockets, so it can reach no process and
   no socket outside itself (ptrace is domain-scoped since ABI 1).
5. **seccomp-bpf** (last, so the steps above could still make their syscalls): an
   allow-list of what a running CPython needs for computation and pipe I/O on
   descriptors it already holds; everything else fails with EPERM.

This module imports only the standard library, plus ``pyseccomp`` and
``landlockpy`` (lazily, so :func:`check_support` can say what is missing). It must
not import anything else from the project: the worker loads it from a bare
``sandbox`` package.
"""

from __future__ import annotations

import errno
import functools
import os
import resource
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from .loader import PACKAGE_DIR, child_program

UID_BASE = 2_000_000_000  # + pid: a uid (and gid) no other live sandbox holds; pid_max <= 2**22 keeps it < 2**31
MAX_CAPTURE = 1 << 20  # bytes of stdout / stderr that run_confined keeps, each
_ARCHES = ("x86_64", "aarch64")
_OPT_OUT = ('To run without OS-level confinement anyway, pass Sandbox(confinement="none"): that is unsafe, '
            "sandboxed code then has the worker process's own access to files, network and other processes.")

# prctl(2) options (linux/prctl.h).
_PR_GET_SECCOMP = 21
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_SYS_LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
_LANDLOCK_CREATE_RULESET_VERSION = 1

# ---------------------------------------------------------------------------------------
# The seccomp allow-list. Default action: ERRNO(EPERM). Every name is resolved for the
# running architecture; a name the architecture does not have (open/stat/select/alarm/
# time/dup2/readlink on aarch64) is skipped. Nothing here creates a file, a socket, a
# process or a signal to another process, or acts on anything but this process and the
# descriptors it already holds.
# ---------------------------------------------------------------------------------------
_ALLOWED_SYSCALLS: dict[str, str] = {
    # I/O on descriptors the process already holds (pipes to the host, /dev/null, files
    # Landlock let it open read-only). No fd is writable unless it was opened so before.
    "read": "read a pipe or a read-only file",
    "readv": "vectored read",
    "pread64": "positioned read (zipimport, FileIO)",
    "write": "write the host pipe or /dev/null",
    "writev": "vectored write (buffered stdout)",
    "lseek": "FileIO.seek/tell and importlib's reads",
    "close": "close own descriptors",
    "dup": "os.dup",
    "dup2": "os.dup2 (x86-64 only)",
    "dup3": "os.dup2 (aarch64) / os.dup2(inheritable=False)",
    "getdents64": "os.listdir/scandir on a directory Landlock let it open (importlib's FileFinder)",
    # Metadata. Landlock does not cover stat/readlink: these reveal names, sizes and times
    # of paths, never contents. importlib needs stat for every import.
    "fstat": "stat an own descriptor",
    "newfstatat": "os.stat (glibc fstatat)",
    "stat": "os.stat (x86-64 legacy)",
    "lstat": "os.lstat (x86-64 legacy)",
    "statx": "os.stat on newer glibc",
    "readlink": "os.readlink/realpath (x86-64)",
    "readlinkat": "os.readlink/realpath",
    "getcwd": "os.getcwd (the private, unreadable temp dir)",
    # Memory of this process only.
    "brk": "malloc",
    "mmap": "malloc, reading .so/.pyc; MAP_SHARED|PROT_WRITE needs a writable fd, which it cannot open",
    "munmap": "free",
    "mremap": "realloc of large blocks",
    "mprotect": "the dynamic loader and libffi (ctypes)",
    "madvise": "malloc trimming (MADV_DONTNEED) in own memory",
    # Signals delivered to this process by the kernel (the cell timer) and its handlers.
    "rt_sigaction": "signal.signal",
    "rt_sigprocmask": "signal masks (glibc, signal.pthread_sigmask)",
    "rt_sigreturn": "return from a signal handler",
    "sigaltstack": "faulthandler's alternate stack",
    "restart_syscall": "the kernel restarting an interrupted sleep",
    "setitimer": "the worker's cell timeout (SIGALRM to itself)",
    "getitimer": "signal.getitimer",
    "alarm": "signal.alarm (x86-64)",
    # Clocks and sleeping.
    "clock_gettime": "time.time/monotonic when the vDSO is not used",
    "clock_getres": "time.get_clock_info",
    "clock_nanosleep": "time.sleep",
    "nanosleep": "time.sleep (older glibc)",
    "gettimeofday": "time.time fallback",
    "time": "time(2) (x86-64)",
    # Waiting on own descriptors (the worker's frame channel uses select).
    "select": "select.select (x86-64)",
    "pselect6": "select.select (aarch64)",
    "poll": "select.poll (x86-64)",
    "ppoll": "select.poll (aarch64)",
    # Threads' primitives within this one thread, and scheduling of itself only.
    "futex": "locks (the GIL, glibc)",
    "sched_yield": "lock back-off",
    "sched_getaffinity": "os.cpu_count fallback once /sys is unreadable",
    # Read-only facts about itself and the machine.
    "getpid": "os.getpid",
    "gettid": "threading.get_native_id",
    "getppid": "os.getppid",
    "getuid": "os.getuid",
    "geteuid": "os.geteuid",
    "getgid": "os.getgid",
    "getegid": "os.getegid",
    "getresuid": "os.getresuid",
    "getresgid": "os.getresgid",
    "getgroups": "os.getgroups",
    "getrlimit": "resource.getrlimit (x86-64; setrlimit is denied)",
    "getrusage": "resource.getrusage, time.process_time fallback",
    "times": "os.times",
    "sysinfo": "os.sysconf(SC_PHYS_PAGES)",
    "uname": "os.uname, platform",
    "getrandom": "os.urandom, random's seed, hash randomization",
    # Leaving.
    "exit": "thread exit",
    "exit_group": "process exit",
}

# Never allowed (the default action refuses them; this list documents the intent and is
# checked against the allow-list): network, exec, new processes/threads, signals and
# ptrace to others, privilege and namespace changes, kernel attack surface, and every
# syscall that changes the filesystem.
_NEVER_ALLOWED = frozenset({
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendto", "sendmsg",
    "sendmmsg", "recvfrom", "recvmsg", "recvmmsg", "execve", "execveat", "fork", "vfork", "clone", "clone3",
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal",
    "pidfd_getfd", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "mount", "umount2",
    "pivot_root", "chroot", "unshare", "setns", "bpf", "perf_event_open", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "userfaultfd", "keyctl", "add_key", "request_key", "setuid",
    "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid", "setfsgid",
    "capset", "prctl", "arch_prctl", "seccomp", "setrlimit", "setpriority", "unlink",
    "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link", "linkat",
    "symlink", "symlinkat", "mknod", "mknodat", "truncate", "ftruncate", "chmod", "fchmod", "fchmodat",
    "chown", "fchown", "lchown", "fchownat", "utimensat", "setxattr", "fsetxattr", "lsetxattr", "creat",
    "memfd_create", "open_by_handle_at", "name_to_handle_at", "fanotify_init", "inotify_init1",
    "openat2", "splice", "tee", "sendfile", "copy_file_range", "init_module", "finit_module",
    "kexec_load", "reboot", "swapon", "acct", "quotactl", "personality", "modify_ldt",
})


class ConfinementUnavailable(Exception):
    """The OS-level confinement cannot be applied here; the message says what is missing
    and how to allow it, and names ``Sandbox(confinement="none")``, the explicit, unsafe opt-out."""


def _unavailable(problem: str, remedy: str = "") -> ConfinementUnavailable:
    return ConfinementUnavailable(" ".join(part for part in (problem, remedy, _OPT_OUT) if part))


# -- host-side support check ----------------------------------------------------------------

_support_checked = False
_support_error: str | None = None


def check_support() -> None:
    """Check, once per process, that this platform can apply :func:`confine`.

    Cheap after the first call (the answer is cached). Checks the OS and architecture,
    that ``pyseccomp`` and the system's ``libseccomp.so.2`` load, that the kernel has
    seccomp filters, that Landlock is enabled (ABI >= 1), that ``landlockpy`` imports,
    and, for root, that the per-sandbox uids are mapped in this user namespace.

    Raises:
        ConfinementUnavailable: with what is missing and how to allow it.
    """
    global _support_checked, _support_error
    if not _support_checked:
        try:
            _check_support_uncached()
        except ConfinementUnavailable as exc:
            _support_error = str(exc)
        _support_checked = True
    if _support_error is not None:
        raise ConfinementUnavailable(_support_error)


def _check_support_uncached() -> None:
    if not sys.platform.startswith("linux"):
        raise _unavailable(f"OS-level confinement needs Linux (seccomp-bpf and Landlock); this is {sys.platform}.")
    machine = os.uname().machine
    if machine not in _ARCHES:
        raise _unavailable(f"OS-level confinement supports {' and '.join(_ARCHES)}; this machine is {machine}.")
    _load_seccomp()
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_GET_SECCOMP, 0, 0, 0, 0) < 0:
        raise _unavailable(f"the kernel has no seccomp support (prctl(PR_GET_SECCOMP): "
                           f"{os.strerror(ctypes.get_errno())}).",
                           "Use a kernel built with CONFIG_SECCOMP_FILTER=y.")
    landlockpy = _load_landlock()
    _landlock_abi(landlockpy, libc)
    if 0 in os.getresuid():
        _check_uid_range()


# The sonames the bindings look up when imported. ctypes.util imports subprocess and
# answers find_library by running `ldconfig -p` in a subprocess: ~30 ms of every worker start.
_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


def _find_library(name: str) -> str | None:
    """``ctypes.util.find_library`` for the bindings: the known soname if it loads, else the real lookup."""
    import ctypes

    soname = _SONAMES.get(name)
    if soname is not None:
        try:
            ctypes.CDLL(soname)
            return soname
        except OSError:
            pass
    sys.modules.pop("ctypes.util", None)  # the stand-in below: import the real module
    import ctypes.util
    return ctypes.util.find_library(name)


def _import_binding(name: str) -> Any:
    """Import ``pyseccomp`` or ``landlockpy`` with a stand-in ``ctypes.util`` (see _SONAMES)."""
    import ctypes
    import importlib
    import types

    stand_in = None
    if "ctypes.util" not in sys.modules:
        stand_in = types.ModuleType("ctypes.util")
        stand_in.find_library = _find_library  # type: ignore[attr-defined]
        sys.modules["ctypes.util"] = ctypes.util = stand_in  # type: ignore[attr-defined]
    try:
        module = importlib.import_module(name)
        if name == "landlockpy":
            module._syscall._get_libc()  # it looks libc up lazily: do it while the stand-in is in place
        return module
    finally:
        if stand_in is not None:
            if sys.modules.get("ctypes.util") is stand_in:
                del sys.modules["ctypes.util"]
            if getattr(ctypes, "util", None) is stand_in:
                del ctypes.util


def _load_seccomp() -> Any:
    try:
        pyseccomp = _import_binding("pyseccomp")
    except ImportError as exc:
        raise _unavailable(f"the seccomp binding is not installed ({exc}).", "Run `pip install pyseccomp`.") from None
    except (OSError, RuntimeError) as exc:  # pyseccomp loads libseccomp.so.2 when imported
        raise _unavailable(f"libseccomp could not be loaded ({exc}).",
                           "Install it: `apt-get install libseccomp2` (Debian/Ubuntu), "
                           "`dnf install libseccomp` (Fedora) or `apk add libseccomp` (Alpine).") from None
    return pyseccomp


def _load_landlock() -> Any:
    try:
        landlockpy = _import_binding("landlockpy")
    except ImportError as exc:
        raise _unavailable(f"the Landlock binding is not installed ({exc}).", "Run `pip install landlockpy`.") from None
    return landlockpy


def _landlock_abi(landlockpy: Any, libc: Any) -> int:
    try:
        abi = int(landlockpy.abi_version())
    except OSError as exc:
        raise _unavailable(f"the Landlock ABI query failed ({exc}); a seccomp profile around this process "
                           "(a container runtime's) may refuse the Landlock syscalls.",
                           "Allow landlock_create_ruleset, landlock_add_rule and landlock_restrict_self "
                           "in that profile.") from None
    if abi >= 1:
        return abi
    import ctypes
    libc.syscall.restype = ctypes.c_long
    libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION)
    if ctypes.get_errno() == errno.EOPNOTSUPP:
        raise _unavailable("Landlock is built into this kernel but not enabled.",
                           "Add it to the lsm= kernel boot parameter, keeping the modules already listed in "
                           "/sys/kernel/security/lsm (e.g. lsm=landlock,lockdown,yama,integrity,apparmor,bpf), "
                           "and reboot.")
    raise _unavailable("this kernel has no Landlock (it needs Linux >= 5.13 built with "
                       "CONFIG_SECURITY_LANDLOCK=y).",
                       "Use a newer kernel, with landlock in CONFIG_LSM or in the lsm= boot parameter.")


def _check_uid_range() -> None:
    try:
        with open("/proc/self/uid_map", encoding="ascii") as fh:
            ranges = [tuple(int(x) for x in line.split()) for line in fh if line.strip()]
        with open("/proc/sys/kernel/pid_max", encoding="ascii") as fh:
            pid_max = int(fh.read())
    except (OSError, ValueError):
        return  # no /proc here: confine() itself will fail closed if setuid is refused
    low, high = UID_BASE, UID_BASE + pid_max
    if not any(inside <= low and high <= inside + count for inside, _outside, count in ranges):
        raise _unavailable(f"this process runs as root in a user namespace whose uid_map does not cover the "
                           f"per-sandbox uids {low}..{high}.",
                           "Map them in the namespace, or run the host as an ordinary (non-root) user.")


# -- the paths the interpreter reads --------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _read_paths() -> tuple[str, ...]:
    return tuple(_find_read_paths())


def interpreter_read_paths() -> list[str]:
    """The default ``read_paths`` of :func:`confine`: what the interpreter itself reads.

    The stdlib directories (``sysconfig`` 'stdlib' and 'platstdlib'), lib-dynload, the
    package directories (not all of site-packages) of RestrictedPython, pyseccomp and
    landlockpy, and this ``sandbox`` package directory. Missing ones are left out.
    Worked out once per process.

    Returns:
        Absolute, resolved, de-duplicated paths.
    """
    return list(_read_paths())


def _find_read_paths() -> list[str]:
    import importlib.util
    import sysconfig

    found: list[str] = []
    # Base prefixes: in a virtualenv, plain 'platstdlib' names the venv's lib/ (all of site-packages).
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
                                      "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix})
    found += [paths["stdlib"], paths["platstdlib"]]
    found += [entry for entry in sys.path if os.path.basename(entry.rstrip(os.sep)) == "lib-dynload"]
    spec = importlib.util.find_spec("_ctypes")  # an extension module: its directory is lib-dynload
    if spec is not None and spec.origin and os.path.isabs(spec.origin):
        found.append(os.path.dirname(spec.origin))
    for name in ("RestrictedPython", "pyseccomp", "landlockpy"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        if spec.submodule_search_locations:
            found += list(spec.submodule_search_locations)
        elif spec.origin and os.path.isabs(spec.origin):
            found.append(spec.origin)
    found.append(PACKAGE_DIR)
    result: list[str] = []
    for path in found:
        real = os.path.realpath(path)
        if os.path.exists(real) and real not in result:
            result.append(real)
    return result


# -- confine() ------------------------------------------------------------------------------

def confine(*, memory_limit_mb: int, read_paths: Sequence[str] | None = None) -> dict:
    """Confine the calling process, irreversibly, for running untrusted code in it.

    Must be called from a single-threaded process. Everything the code needs later
    from outside ``read_paths`` (extension modules whose shared libraries live
    elsewhere, files a root process can no longer read once it dropped to its sandbox
    uid) must be imported or opened before. The Landlock rules and the seccomp filter
    are prepared first, while the process still has its own access rights (a root
    process must open, e.g., a stdlib under the 0700 ``/root``); they are enforced in
    the order rlimits, identity, no_new_privs, Landlock, seccomp.

    Args:
        memory_limit_mb: the address-space limit (RLIMIT_AS), in MiB.
        read_paths: directories (or files) beneath which reading stays allowed;
            ``None`` means :func:`interpreter_read_paths`.

    Returns:
        A description for diagnostics: ``uid``, ``gid``, ``dropped_root``,
        ``landlock_abi``, ``landlock_handled_fs``/``_net``, ``landlock_scoped``,
        ``seccomp`` (True), ``arch`` and ``read_paths``.

    Raises:
        ConfinementUnavailable: the platform lacks a mechanism, or any step failed.
            The process may then be partly confined and should exit.
        ValueError: ``memory_limit_mb`` is not a positive integer.
    """
    if isinstance(memory_limit_mb, bool) or not isinstance(memory_limit_mb, int) or memory_limit_mb <= 0:
        raise ValueError(f"confine(memory_limit_mb=...) must be a positive integer, got {memory_limit_mb!r}")
    if isinstance(read_paths, (str, bytes)):
        raise TypeError("confine(read_paths=...) must be a sequence of paths, not a single str")
    if "landlockpy" not in sys.modules:
        # landlockpy imports its probe() test helpers (dataclasses, inspect: ~13 ms of every
        # worker start). A process about to be confined never uses them: an empty stand-in.
        import types
        sys.modules.setdefault("landlockpy.testing", types.ModuleType("landlockpy.testing"))
    check_support()
    import ctypes
    import landlockpy
    import pyseccomp

    step = "preparing"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _require_single_thread()
        paths = interpreter_read_paths() if read_paths is None else [os.path.realpath(p) for p in read_paths]
        ruleset = _prepare_landlock(landlockpy, paths)
        seccomp_filter = _prepare_seccomp(pyseccomp)
        step = "setting rlimits"
        set_rlimits(memory_limit_mb)
        step = "switching identity"
        dropped = _drop_identity()
        step = "setting no_new_privs"
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        step = "enforcing Landlock"
        abi = ruleset.abi_version
        handled = (int(ruleset.handled_fs), int(ruleset.handled_net), int(ruleset.scoped))
        ruleset.restrict(no_new_privs=False)  # no_new_privs is already set, above
        ruleset.close()
        if "/" not in paths:
            _check_landlock_live()
        step = "loading the seccomp filter"
        seccomp_filter.load()
        _check_seccomp_live()
    except ConfinementUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure means: not confined, refuse to run code
        raise _unavailable(f"could not confine the sandbox process ({step}: {type(exc).__name__}: {exc}); "
                           "refusing to run code unconfined.") from exc
    return {"uid": os.getuid(), "gid": os.getgid(), "dropped_root": dropped, "landlock_abi": abi,
            "landlock_handled_fs": handled[0], "landlock_handled_net": handled[1], "landlock_scoped": handled[2],
            "seccomp": True, "arch": os.uname().machine, "read_paths": paths}


def _require_single_thread() -> None:
    # Landlock and seccomp bind the calling thread only: another thread would stay free.
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        import threading
        threads = threading.active_count()
    if threads != 1:
        raise RuntimeError(f"the process has {threads} threads; confine() needs a single-threaded process")


def _check_landlock_live() -> None:
    # "/" is beneath no read path: opening it must now fail.
    try:
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        return
    os.close(fd)
    raise RuntimeError("reading / was still allowed after landlock_restrict_self")


def _check_seccomp_live() -> None:
    # getsid(2) is harmless and not on the allow-list: it must now fail with EPERM.
    try:
        os.getsid(0)
    except PermissionError:
        return
    raise RuntimeError("getsid(2) was still allowed after loading the seccomp filter")


def _prepare_landlock(landlockpy: Any, paths: list[str]) -> Any:
    """Build (not yet enforce) the ruleset: every right the ABI knows is handled, only reads are granted."""
    access = landlockpy.AccessFS
    ruleset = landlockpy.Ruleset(
        handled_fs=None,   # every fs right both the kernel and landlockpy know: stops writes, creates,
                           # unlinks, renames, links, truncation, device ioctls, mknod and exec everywhere
        handled_net=None,  # ABI >= 4: TCP (ABI >= 10: also UDP) bind/connect with no port rule: none at all
        scoped=landlockpy.Scope.SIGNAL | landlockpy.Scope.ABSTRACT_UNIX_SOCKET,  # ABI >= 6: no signal to and
                           # no abstract-socket connection with any process outside this sandbox's domain
        best_effort=True,  # keep what the running ABI supports; the minimum (ABI 1) is checked above
    )
    try:
        if ruleset.abi_version < 1:
            raise RuntimeError("Landlock is unavailable")
        for path in paths:
            # Only reading beneath the interpreter's own directories: stops reading homes, /proc,
            # /tmp, other sandboxes' files. Directory rights are invalid on a file, hence the split.
            rights = access.READ_FILE | access.READ_DIR if os.path.isdir(path) else access.READ_FILE
            ruleset.allow_path(path, rights)
    except BaseException:
        ruleset.close()
        raise
    return ruleset


def _resolve(pyseccomp: Any, name: str) -> int | None:
    number = int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))
    return number if number >= 0 else None  # negative: a name this architecture lacks


def _prepare_seccomp(pyseccomp: Any) -> Any:
    """Build (not yet load) the filter: default EPERM, the allow-list, and a few argument-checked rules."""
    import fcntl
    import termios
    overlap = _NEVER_ALLOWED & set(_ALLOWED_SYSCALLS)
    if overlap:
        raise RuntimeError(f"allow-list contains never-allowed syscalls: {sorted(overlap)}")
    arg, allow = pyseccomp.Arg, pyseccomp.ALLOW
    filt = pyseccomp.SyscallFilter(pyseccomp.ERRNO(errno.EPERM))  # anything not allowed below fails with EPERM
    # Another syscall ABI (i386 int 0x80, arm32): its numbers mean other calls; stops bypassing the list.
    filt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    for name in ("read", "write", "close", "mmap", "exit_group", "openat", "rt_sigreturn"):
        if _resolve(pyseccomp, name) is None:
            raise RuntimeError(f"libseccomp does not know the syscall {name!r} on this architecture")

    def add(action: int, name: str, *conditions: Any) -> None:
        number = _resolve(pyseccomp, name)
        if number is not None:  # unknown to this libseccomp or architecture: the default EPERM applies
            filt.add_rule(action, number, *conditions)

    for name in _ALLOWED_SYSCALLS:
        add(allow, name)  # see _ALLOWED_SYSCALLS for what needs each one
    write_flags = (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_APPEND
                   | (os.O_TMPFILE & ~os.O_DIRECTORY))
    # open/openat only without any write or create flag: stops writing, creating, truncating or
    # appending to any file (Landlock refuses those too; this holds even for paths Landlock allows).
    add(allow, "openat", arg(2, pyseccomp.MASKED_EQ, write_flags, 0))
    add(allow, "open", arg(1, pyseccomp.MASKED_EQ, write_flags, 0))
    # openat2 keeps its flags in memory the filter cannot read: ENOSYS, so callers fall back to openat.
    add(pyseccomp.ERRNO(errno.ENOSYS), "openat2")
    # clone3 passes its flags in memory too: ENOSYS makes glibc fall back to clone, refused above (no fork).
    add(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    # fcntl only for fd flags and dup: stops F_SETOWN/F_SETSIG (SIGIO to another process),
    # F_SETLEASE/F_NOTIFY (signals), and F_SETLK/F_OFD_SETLK (locking other processes' files).
    for command in (fcntl.F_DUPFD, fcntl.F_DUPFD_CLOEXEC, fcntl.F_GETFD, fcntl.F_SETFD,
                    fcntl.F_GETFL, fcntl.F_SETFL):
        add(allow, "fcntl", arg(1, pyseccomp.EQ, command))
    # ioctl only to toggle O_NONBLOCK / close-on-exec of an own fd (os.set_blocking and os.set_inheritable
    # use these): stops TIOCSTI (typing commands into a terminal it inherited) and every device or
    # filesystem ioctl. TCGETS fails too, so isatty() is False.
    for request in (termios.FIONBIO, termios.FIOCLEX, termios.FIONCLEX):
        add(allow, "ioctl", arg(1, pyseccomp.EQ, request))
    # prlimit64 only as getrlimit on itself (pid 0, new limit NULL): stops raising or lowering any limit.
    add(allow, "prlimit64", arg(0, pyseccomp.EQ, 0), arg(2, pyseccomp.EQ, 0))
    return filt


def set_rlimits(memory_limit_mb: int) -> None:
    """Memory cap, no file growth, no core dumps."""
    limit = memory_limit_mb * 1024 * 1024
    _lower_limit(resource.RLIMIT_AS, limit)   # stops exhausting the host's memory
    _lower_limit(resource.RLIMIT_FSIZE, 0)    # stops growing any file, even through an fd opened earlier
    _lower_limit(resource.RLIMIT_CORE, 0)     # stops dumping this process's memory to disk on a crash


def _lower_limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _drop_identity() -> bool:
    """As root: become ``UID_BASE + pid``, a uid and gid no other sandbox holds. Returns whether it dropped."""
    if 0 in os.getresuid():
        target = UID_BASE + os.getpid()
        os.setgroups([])                         # stops access through root's supplementary groups
        os.setresgid(target, target, target)     # stops group access to files of any other user
        os.setresuid(target, target, target)     # all three: no way back to root; clears capabilities
        if os.getresuid() != (target,) * 3 or os.getresgid() != (target,) * 3 or os.getgroups():
            raise RuntimeError(f"could not become uid/gid {target}")
        _check_no_capabilities()
        dropped = True
    else:
        dropped = False
    # No new processes for this uid (a fresh one as root; harmless for a user): stops fork even
    # if the seccomp filter let clone through.
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    return dropped


def _check_no_capabilities() -> None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            caps = {k: v.strip() for k, _, v in (line.partition(":") for line in fh) if k.startswith("Cap")}
    except OSError:
        return  # setresuid away from uid 0 clears the permitted and effective sets by definition
    for key in ("CapPrm", "CapEff", "CapAmb"):
        if int(caps.get(key, "0"), 16) != 0:
            raise RuntimeError(f"capabilities remain after dropping root ({key}={caps[key]})")


# -- run_confined(): one confined, unrestricted Python run ----------------------------------

class ConfinedResult(NamedTuple):
    """What one :func:`run_confined` run did.

    ``returncode`` is the exit status (negative: killed by that signal); ``stdout`` and
    ``stderr`` hold at most ``MAX_CAPTURE`` bytes each (decoded as UTF-8, invalid bytes
    replaced); ``timed_out`` means the run was killed at its timeout.
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool


# Imported before confinement: a root run drops to a fresh uid that may be unable to read the
# interpreter's own files (a pyenv build under the 0700 /root), and ctypes needs libffi from a
# directory outside the read paths.
_PRELOAD = ("_strptime", "ctypes", "datetime", "errno", "json", "re", "select", "signal", "socket",
            "statistics", "time", "traceback", "encodings.latin_1", "encodings.utf_16", "encodings.idna",
            "encodings.unicode_escape")
_RUN_PROGRAM = child_program("confine", "_child_main")
_CHILD_FAILED = 86


def run_confined(code: str, *, timeout: float = 10.0, memory_limit_mb: int = 512) -> ConfinedResult:
    """Run plain, unrestricted Python source in a fresh, confined interpreter.

    The child is ``sys.executable -I`` with an empty environment, a private 0700
    temporary working directory (removed afterwards), its own session and process
    group, and no stdin after it has read the source. It calls :func:`confine` --
    exactly what the worker calls -- and then ``exec``\\ s the source in a fresh
    ``{"__name__": "__main__"}`` namespace.

    Args:
        code: Python source.
        timeout: seconds before the process group is killed.
        memory_limit_mb: the child's address-space limit, in MiB.

    Returns:
        A :class:`ConfinedResult`.

    Raises:
        ConfinementUnavailable: the platform cannot confine, or the child could not
            confine itself (then none of ``code`` ran).
        TypeError: ``code`` is not a str.
        ValueError: a non-positive ``timeout`` or ``memory_limit_mb``.
        OSError: the interpreter could not be started.
    """
    import shutil
    import subprocess
    import tempfile
    import time

    if not isinstance(code, str):
        raise TypeError(f"run_confined(code) must be a str, got {type(code).__name__}")
    if not timeout > 0:
        raise ValueError(f"run_confined(timeout=...) must be positive, got {timeout!r}")
    if isinstance(memory_limit_mb, bool) or not isinstance(memory_limit_mb, int) or memory_limit_mb <= 0:
        raise ValueError(f"run_confined(memory_limit_mb=...) must be a positive integer, got {memory_limit_mb!r}")
    check_support()
    workdir = tempfile.mkdtemp(prefix="rlm-confined-")  # mode 0700
    status_r, status_w = os.pipe()
    proc = None
    try:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _RUN_PROGRAM, PACKAGE_DIR, os.pathsep.join(_dependency_dirs()),
                 str(memory_limit_mb), str(status_w)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={}, cwd=workdir,
                start_new_session=True, close_fds=True, pass_fds=(status_w,))
        finally:
            os.close(status_w)
        deadline = time.monotonic() + timeout
        out, err, status, timed_out = _communicate(proc, code.encode("utf-8", "surrogatepass"), status_r, deadline)
        returncode = proc.wait()
    finally:
        os.close(status_r)
        if proc is not None:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if not pipe.closed:
                    pipe.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if status != b"ok":
        detail = status.decode("utf-8", "replace").removeprefix("error: ") or _text(err).strip()[-2000:]
        if timed_out and not status:
            detail = f"the child did not confine itself within {timeout} s"
        raise ConfinementUnavailable(detail or f"the confined child exited with status {returncode} before "
                                               "confining itself")
    return ConfinedResult(returncode=returncode, stdout=_text(out), stderr=_text(err), timed_out=timed_out)


def _dependency_dirs() -> list[str]:
    """The sys.path entries holding the two bindings, so a child of another interpreter layout finds them."""
    import importlib.util
    dirs: list[str] = []
    for name in ("pyseccomp", "landlockpy"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            continue
        location = os.path.dirname(spec.origin)
        if spec.submodule_search_locations:  # a package: origin is <dir>/<name>/__init__.py
            location = os.path.dirname(location)
        if location not in dirs:
            dirs.append(location)
    return dirs


def _kill_group(proc: Any) -> None:
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _text(data: bytearray) -> str:
    return bytes(data).decode("utf-8", "replace")


def _communicate(proc: Any, source: bytes, status_fd: int, deadline: float) -> tuple[bytearray, bytearray,
                                                                                    bytes, bool]:
    """Feed ``source`` to stdin and read stdout, stderr and the status pipe, each bounded, until EOF or the deadline."""
    import selectors
    import time

    outputs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), status_fd: bytearray()}
    caps = {proc.stdout.fileno(): MAX_CAPTURE, proc.stderr.fileno(): MAX_CAPTURE, status_fd: 64 * 1024}
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    view = memoryview(source)
    timed_out = False
    with selectors.DefaultSelector() as selector:
        for fd in outputs:
            selector.register(fd, selectors.EVENT_READ)
        selector.register(stdin_fd, selectors.EVENT_WRITE)
        open_fds = set(outputs) | {stdin_fd}
        drain_until = None
        while open_fds - {stdin_fd} or (stdin_fd in open_fds and not timed_out):
            now = time.monotonic()
            if not timed_out and now >= deadline:
                timed_out = True
                _kill_group(proc)
                drain_until = now + 2.0
            if drain_until is not None and now >= drain_until:
                break
            wait = (drain_until if timed_out else deadline) - now
            for key, _ in selector.select(max(wait, 0.0)):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        sent = os.write(fd, view[:1 << 16]) if view else 0
                    except BrokenPipeError:
                        sent, view = 0, view[:0]
                    except BlockingIOError:
                        continue
                    view = view[sent:]
                    if not view:
                        selector.unregister(fd)
                        open_fds.discard(fd)
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(fd)
                    open_fds.discard(fd)
                    continue
                room = caps[fd] - len(outputs[fd])
                if room > 0:
                    outputs[fd] += chunk[:room]
    if not proc.stdin.closed:
        proc.stdin.close()
    return outputs[proc.stdout.fileno()], outputs[proc.stderr.fileno()], bytes(outputs[status_fd]), timed_out


def _child_main() -> None:
    """The child of :func:`run_confined`: read the source, confine, run it."""
    status_fd = int(sys.argv[4])
    try:
        for entry in sys.argv[2].split(os.pathsep):
            if entry and entry not in sys.path:
                sys.path.append(entry)
        chunks = []
        while True:
            chunk = os.read(0, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(0)  # stdin stays closed for the code
        import importlib
        for name in _PRELOAD:
            importlib.import_module(name)
        sys.dont_write_bytecode = True
        confine(memory_limit_mb=int(sys.argv[3]))
    except BaseException as exc:  # noqa: BLE001 - report any failure to confine, run nothing
        os.write(status_fd, f"error: {exc}".encode("utf-8", "replace")[:60000])
        os._exit(_CHILD_FAILED)
    os.write(status_fd, b"ok")
    os.close(status_fd)
    source = b"".join(chunks).decode("utf-8", "surrogatepass")
    del chunks
    sys.argv = [""]
    exec(compile(source, "<confined>", "exec"), {"__name__": "__main__"})  # noqa: S102 - the point
