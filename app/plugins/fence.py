"""The Python-level fence of a plugin's sandbox process: an audit hook (PEP 578) that refuses
what a plugin step may not do.

Installed by app/plugins/sandbox_child.py after the plugin was imported and before its step
runs; an audit hook cannot be removed once added. It refuses:

- connecting, sending to (sendto, sendmsg) or resolving any host:port the plugin did not
  declare in `network` (declared host names are resolved once, when the fence is built, so
  `connect` to their addresses passes), reverse lookups (gethostbyaddr, getnameinfo: a DNS
  channel), Unix sockets, and listening (`bind`);
- starting processes (fork, exec, posix_spawn, subprocess, os.system) when the plugin's
  `processes` limit is 0, and signalling any process but itself. `_posixsubprocess.fork_exec`
  (what subprocess forks with) raises no audit event: `install` replaces it before the hook
  goes on, and re-importing `_posixsubprocess` is refused;
- loading native code at run time (ctypes, cffi, SQLite extensions) that could step around
  the hook, and walking the interpreter's objects (gc.get_objects/get_referrers/get_referents:
  the hook itself is one of them);
- opening files outside the call's temp dir (read and write) and the Python installation,
  the imported packages' folders and the system's certificates and time zones (read only):
  no /proc (the parent's environment), /etc, service state or sockets; SQLite databases only
  in the temp dir (or in memory); listing folders (listdir, scandir, glob) and changing
  directory only where it may read;
- raising resource limits and adding further audit hooks.

This is a fence for Python code, not a wall: C code in an extension module (or a plugin that
finds a way to the interpreter's internals) is not seen by audit hooks. The real boundary in
production is the plugin's own container: no secrets mounted, a read-only root filesystem and
a NetworkPolicy that lets it reach only its declared hosts (docs/plugins.md).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable
from typing import Any


class SandboxRefusal(PermissionError):
    """The sandbox refused an operation; the step fails permanently (retrying cannot help)."""


def _refuse_fork_exec(plugin: str) -> Any:
    def fork_exec(*args: Any, **kwargs: Any) -> Any:
        raise SandboxRefusal(
            f"the sandbox of plugin {plugin!r} refused starting a process "
            "(_posixsubprocess.fork_exec; its processes limit is 0)"
        )

    return fork_exec


def seal_process_starts(plugin: str) -> None:
    """Replace `_posixsubprocess.fork_exec` - it forks and execs with no audit event - where
    it is reachable (the module, subprocess's own reference), and drop native-code modules
    loaded before the fence from sys.modules, so that reaching them again is an audited
    (refused) import. Nothing keeps the original fork_exec: it is freed."""
    refusing = _refuse_fork_exec(plugin)
    module = sys.modules.get("_posixsubprocess")
    if module is not None:
        module.fork_exec = refusing  # type: ignore[attr-defined]
    subprocess_module = sys.modules.get("subprocess")
    if subprocess_module is not None and hasattr(subprocess_module, "_fork_exec"):
        subprocess_module._fork_exec = refusing  # type: ignore[attr-defined]
    # (multiprocessing imports _posixsubprocess per call: it gets the replaced fork_exec.)
    for name in NATIVE_MODULES:
        sys.modules.pop(name, None)


def parse_network(entries: Iterable[str]) -> set[tuple[str, int]]:
    """{(host, port)} of declared "host:port" entries ("[v6]:port" for IPv6 addresses)."""
    allowed = set()
    for entry in entries:
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"network entry {entry!r} is not host:port")
        allowed.add((host.strip("[]").lower(), int(port)))
    return allowed


def resolve(allowed: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """The declared pairs plus the addresses their host names resolve to (unresolvable names
    stay allowed by name: the plugin gets the DNS error itself)."""
    addresses = set(allowed)
    for host, port in allowed:
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except OSError:
            continue
        addresses.update((str(info[4][0]).lower(), port) for info in infos)
    return addresses


# Audit events that start or replace a process.
PROCESS_EVENTS = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "subprocess.Popen",
        "os.startfile",
        "pty.spawn",
    }
)
# Native code loaded at run time could reach anything, the hook included.
NATIVE_MODULES = ("ctypes", "_ctypes", "cffi", "_cffi_backend")
# Starts processes without an audit event (its fork_exec): never imported anew while the
# processes limit is 0 (the loaded one is neutralised by `Fence.install`).
PROCESS_MODULES = ("_posixsubprocess",)
# Audit events that would hand the plugin the hook's own objects (to switch it off).
INTROSPECTION_EVENTS = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents"})
# Reverse lookups: a DNS channel to anywhere, whatever the declared network.
REVERSE_LOOKUP_EVENTS = frozenset({"socket.gethostbyaddr", "socket.getnameinfo"})
# Audit events whose first argument (and, for two-path events, second) is a path written to.
WRITE_PATH_EVENTS = {
    "os.remove": 1,
    "os.rmdir": 1,
    "os.mkdir": 1,
    "os.rename": 2,
    "os.symlink": 2,
    "os.link": 2,
    "os.truncate": 1,
    "os.chmod": 1,
    "os.chown": 1,
    "os.utime": 1,
    "shutil.rmtree": 1,
}
# Read-only places every Python program may need (certificates for TLS, time zones).
SYSTEM_READ_ROOTS = ("/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/usr/share/zoneinfo")
DEVICES = frozenset({"/dev/null", "/dev/urandom", "/dev/random", "/dev/zero"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class Fence:
    """The hook's rules for one call (see the module docstring)."""

    def __init__(
        self,
        plugin: str,
        network: Iterable[str],
        temp_dir: str,
        processes: int,
        read_roots: Iterable[str],
    ) -> None:
        self.plugin = plugin
        self.declared = parse_network(network)
        self.addresses = resolve(self.declared) if self.declared else set()
        self.temp_dir = os.path.realpath(temp_dir)
        self.processes = processes
        roots = {os.path.realpath(r) for r in (*read_roots, *SYSTEM_READ_ROOTS)}
        self.read_roots = tuple(sorted(roots))
        # Folders that may be listed: the readable ones and those Python imports from (an
        # import lists its sys.path entries).
        paths = {os.path.realpath(p) for p in sys.path if isinstance(p, str) and p}
        self.list_roots = tuple(sorted(roots | paths))
        self.pid = os.getpid()
        self._busy = False  # the checks themselves trigger audit events: no recursion

    def install(self) -> None:
        """Neutralise what starts processes unaudited, then add the hook (for good)."""
        if self.processes <= 0:
            seal_process_starts(self.plugin)
        sys.addaudithook(self)

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            self._check(event, args)
        finally:
            self._busy = False

    def refuse(self, what: str) -> None:
        raise SandboxRefusal(f"the sandbox of plugin {self.plugin!r} refused {what}")

    def _check(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            self._check_open(args[0], args[1], args[2])
        elif event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            if event == "socket.sendmsg" and args[1] is None:
                return  # on a connected socket: its connect was checked
            self._check_address(args[0], args[1], event.split(".")[1])
        elif event in REVERSE_LOOKUP_EVENTS:
            self.refuse(f"a reverse name lookup ({event})")
        elif event == "socket.getaddrinfo":
            self._check_name(args[0], args[1])
        elif event in ("socket.gethostbyname", "socket.gethostbyname_ex"):
            self._check_name(args[0], None)
        elif event == "socket.bind":
            self.refuse("listening on a socket")
        elif event in PROCESS_EVENTS and self.processes <= 0:
            self.refuse(f"starting a process ({event}; its processes limit is 0)")
        elif event in ("os.kill", "os.killpg", "signal.pthread_kill"):
            if event != "os.kill" or args[0] != self.pid:
                self.refuse("signalling another process")
        elif event == "import" and str(args[0]).split(".")[0] in NATIVE_MODULES:
            self.refuse(f"importing {args[0]} (native code)")
        elif event == "import" and args[0] in PROCESS_MODULES and self.processes <= 0:
            self.refuse(f"importing {args[0]} (starts processes; its processes limit is 0)")
        elif event in ("ctypes.dlopen", "cffi.dlopen"):
            self.refuse("loading a native library")
        elif event in ("sqlite3.enable_load_extension", "sqlite3.load_extension"):
            self.refuse("loading an SQLite extension (native code)")
        elif event == "sqlite3.connect":
            self._check_sqlite(args[0])
        elif event in ("os.listdir", "os.scandir", "glob.glob", "os.chdir"):
            self._check_listing(args[0], event)
        elif event in INTROSPECTION_EVENTS:
            self.refuse(f"walking the interpreter's objects ({event})")
        elif event in ("resource.setrlimit", "resource.prlimit"):
            self.refuse("changing resource limits")
        elif event == "sys.addaudithook":
            self.refuse("adding an audit hook")
        elif event in WRITE_PATH_EVENTS:
            for path in args[: WRITE_PATH_EVENTS[event]]:
                if isinstance(path, str | bytes) and not self._inside_temp(path):
                    self.refuse(f"changing {os.fsdecode(path)!r} (outside its temp dir)")

    def _check_open(self, path: Any, mode: Any, flags: Any) -> None:
        if path is None or isinstance(path, int):  # an fd it already holds
            return
        writes = bool(isinstance(flags, int) and flags & _WRITE_FLAGS) or (
            isinstance(mode, str) and any(c in mode for c in "wax+")
        )
        if self._inside_temp(path):
            return
        real = os.path.realpath(os.fsdecode(path))
        if real in DEVICES:
            return
        if not writes and any(real == r or real.startswith(r + os.sep) for r in self.read_roots):
            return
        self.refuse(f"opening {os.fsdecode(path)!r} (outside its temp dir)")

    def _check_sqlite(self, database: Any) -> None:
        if isinstance(database, int):
            return
        name = os.fsdecode(database)
        if name.startswith("file:"):  # a URI (uri=True): its path, without the query
            name = name[5:].split("?", 1)[0].split("#", 1)[0]
            if name.startswith("//"):
                name = "/" + name[2:].partition("/")[2]
        if name in ("", ":memory:") or self._inside_temp(name):
            return
        self.refuse(f"opening the SQLite database {os.fsdecode(database)!r} (outside its temp dir)")

    def _check_listing(self, path: Any, event: str) -> None:
        if path is None or isinstance(path, int):  # the working directory, or an fd it holds
            return
        if event == "glob.glob":  # its pattern: the fixed folder before the first wildcard
            pattern = os.fsdecode(path)
            cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
            path = os.path.dirname(pattern[:cut]) or "."
        if self._inside_temp(path):
            return
        real = os.path.realpath(os.fsdecode(path))
        if any(real == r or real.startswith(r + os.sep) for r in self.list_roots):
            return
        what = "changing directory to" if event == "os.chdir" else "listing"
        self.refuse(f"{what} {os.fsdecode(path)!r} (outside what it may read)")

    def _inside_temp(self, path: str | bytes) -> bool:
        real = os.path.realpath(os.fsdecode(path))
        return real == self.temp_dir or real.startswith(self.temp_dir + os.sep)

    def _check_address(self, sock: Any, address: Any, what: str) -> None:
        family = getattr(sock, "family", None)
        if family == socket.AF_UNIX or not isinstance(address, tuple):
            self.refuse(f"{what} to a local socket {address!r}")
        host, port = str(address[0]).lower(), address[1]
        if (host, port) not in self.addresses:
            self.refuse(f"{what} to {host}:{port} (not in its declared network)")

    def _check_name(self, host: Any, port: Any) -> None:
        if host is None:
            return
        name = (host.decode() if isinstance(host, bytes) else str(host)).lower()
        if isinstance(port, bytes | str) and str(port).isdigit():
            port = int(port)
        if isinstance(port, int):
            if (name, port) in self.addresses:
                return
        elif any(h == name for h, _ in self.addresses):
            return
        where = f"{name}:{port}" if port is not None else name
        self.refuse(f"resolving {where} (not in its declared network)")
