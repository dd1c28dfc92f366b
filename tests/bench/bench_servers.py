"""The two servers tests/bench/run measures, and what /proc says of them.

Both run from configs written into the benchmark's temporary directory,
listen on 127.0.0.1 only (a plain port that offers STLS, and an implicit
TLS port), serve the same users from the same passwd-file, and are started
in a session of their own, so a Ctrl-C reaches the benchmark, which then
stops them in order. Each writes its pid into DIR/pids, which the
watchdog reads should the benchmark itself be killed.

CPU time is utime+stime of every process of a server from
/proc/PID/stat. Dovecot forks a process per POP3 session that exits with
it; its time then moves into the master's cutime+cstime when the master
reaps it, so the master's children's time is counted too. Memory is the
sum of Pss (/proc/PID/smaps_rollup) over a server's processes: Pss splits
each shared page between the processes that map it, so a hundred Dovecot
processes sharing libc count libc once.
"""

import json
import os
import pwd
import grp
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Optional

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---- /proc ------------------------------------------------------------------


def _stat_fields(pid: int):
    """The fields of /proc/PID/stat after the command name (field 3 on),
    or None when the process is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(root: int) -> list:
    """root and all its descendants that run now."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """utime+stime of root and its descendants, plus the children root has
    reaped (cutime+cstime)."""
    ticks = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # stat fields 14-17 (1-based): utime stime cutime cstime; fields[0]
        # here is field 3.
        ticks += int(fields[11]) + int(fields[12])
        if pid == root:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def pss_kib(root: int) -> int:
    total = 0
    for pid in process_tree(root):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass  # gone meanwhile: it holds nothing now
    return total


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cmdline(pid: int) -> bytes:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


def stop_recorded(directory: str) -> None:
    """Stops every process listed in directory/pids whose command line
    still names directory (a stale pid may belong to anything by now):
    what the watchdog does when the benchmark was killed."""
    try:
        with open(os.path.join(directory, "pids")) as f:
            pids = [int(line) for line in f if line.strip()]
    except OSError:
        return
    ours = [p for p in pids if directory.encode() in _cmdline(p)]
    for pid in ours:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(_stat_fields(p) for p in ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in ours:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_accepting(port: int, process: subprocess.Popen, name: str, log_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError("%s exited with %d at start; its log %s:\n%s" %
                               (name, process.returncode, log_path, _tail(log_path)))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("%s does not accept on port %d after %d s:\n%s" %
                                   (name, port, START_TIMEOUT_S, _tail(log_path)))
            time.sleep(0.05)


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class MailUser:
    """Who the servers' mail access runs as: root runs both servers and
    gives mail to "nobody" (Dovecot refuses mail access as uid 0, and
    popkitd then drops to the same user); anyone else runs everything as
    themselves."""

    def __init__(self):
        self.as_root = os.geteuid() == 0
        if self.as_root:
            entry = pwd.getpwnam("nobody")
        else:
            entry = pwd.getpwuid(os.geteuid())
        self.name = entry.pw_name
        self.uid = entry.pw_uid
        self.gid = entry.pw_gid
        self.group = grp.getgrgid(entry.pw_gid).gr_name


@dataclass
class Served:
    """What both servers serve alike: the users, the certificate, how many
    sessions they must hold, and the CPUs they run on (None: all)."""
    certificate: str
    key: str
    users_file: str
    mail_user: MailUser
    max_sessions: int
    cpu_set: Optional[set] = None


def pinned_to(cpu_set):
    """A preexec_fn that puts the child, and so every thread and process it
    starts, on cpu_set; None when cpu_set is None (no pinning)."""
    if cpu_set is None:
        return None
    return lambda: os.sched_setaffinity(0, cpu_set)


class Server:
    """What both servers share: a process started in its own session, its
    pid recorded, SIGTERM to stop it; its own ports and copy of the
    maildirs, and what both serve (Served)."""

    name = "?"

    def __init__(self, workdir: str, pids_file: str, ports: dict, mail_root: str,
                 served: Served):
        self.dir = workdir
        self.pids_file = pids_file
        self.process = None
        self.ports = ports
        self.mail_root = mail_root
        self.certificate = served.certificate
        self.key = served.key
        self.users_file = served.users_file
        self.mail_user = served.mail_user
        self.max_sessions = served.max_sessions
        self.cpu_set = served.cpu_set
        os.makedirs(workdir, exist_ok=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _spawn(self, argv, log_path):
        log = open(log_path, "ab")
        try:
            self.process = subprocess.Popen(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True,
                                            preexec_fn=pinned_to(self.cpu_set))
        finally:
            log.close()
        with open(self.pids_file, "a") as f:
            f.write("%d\n" % self.process.pid)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reap_leftovers()
        self.process = None

    def _reap_leftovers(self) -> None:
        """Processes of the server's session that outlived it."""
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def pss_kib(self) -> int:
        return pss_kib(self.pid)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Popkitd(Server):
    name = "popkit"

    def __init__(self, workdir, pids_file, ports, mail_root, served: Served, binary,
                 modules_dir):
        super().__init__(workdir, pids_file, ports, mail_root, served)
        self.binary = binary
        self.modules_dir = modules_dir
        self.config_path = os.path.join(workdir, "popkit.json")
        self.log_path = os.path.join(workdir, "popkitd.log")
        self.workers = None

    def config(self, workers: int) -> dict:
        config = {
            "hostname": "localhost",
            "workers": workers,
            "listen": [
                {"address": "127.0.0.1", "port": self.ports["plain"], "tls": "starttls"},
                {"address": "127.0.0.1", "port": self.ports["implicit"], "tls": "implicit"},
            ],
            "tls": {"certificate": self.certificate, "key": self.key},
            "plaintext_auth": "always",
            "auth": [{"module": "passwd-file", "path": self.users_file}],
            "store": {"module": "maildir", "path": os.path.join(self.mail_root, "%u")},
            "limits": {
                # Per worker; every session of the idle test may land on one.
                "max_connections": self.max_sessions + 1000,
                "max_connections_per_ip": 0,
                "max_sessions_per_user": 0,
                "shutdown_timeout_s": 5,
            },
            "log": {"level": "warning"},
        }
        if self.mail_user.as_root:
            config["user"] = self.mail_user.name
        return config

    def start(self, workers: int) -> None:
        self.workers = workers
        with open(self.config_path, "w") as f:
            json.dump(self.config(workers), f, indent=2)
        self._spawn([self.binary, "-c", self.config_path, "--modules-dir", self.modules_dir],
                    self.log_path)
        for port in self.ports.values():
            _wait_accepting(port, self.process, "popkitd", self.log_path)

    def restart(self, workers: int) -> None:
        self.stop()
        self.start(workers)

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                             timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]

    def log_tail(self) -> str:
        return _tail(self.log_path)


class Dovecot(Server):
    """Debian's Dovecot from a config of its own: base_dir, state_dir and
    the log in the temporary directory, nothing under /etc, /run or
    /var/lib. The settings and why: tests/bench/README.md."""

    name = "Dovecot"
    BINARY = "/usr/sbin/dovecot"

    def __init__(self, workdir, pids_file, ports, mail_root, served: Served, cpus: int):
        super().__init__(workdir, pids_file, ports, mail_root, served)
        self.cpus = cpus
        self.config_path = os.path.join(workdir, "dovecot.conf")
        self.log_path = os.path.join(workdir, "dovecot.log")
        self.instance = "popkit-bench-%d" % os.getpid()

    def config_text(self) -> str:
        d = self.dir
        sessions = self.max_sessions + 1000
        if self.mail_user.as_root:
            users = ("default_internal_user = dovecot\n"
                     "default_login_user = dovenull\n")
            chroot = ""
        else:
            # Everything as the one user running the benchmark: no
            # privilege separation, so no chroot either.
            users = ("default_internal_user = %s\n"
                     "default_internal_group = %s\n"
                     "default_login_user = %s\n" %
                     (self.mail_user.name, self.mail_user.group, self.mail_user.name))
            chroot = "  chroot =\n"
        return f"""# Written by tests/bench/run; why these settings: tests/bench/README.md.
base_dir = {d}/run
state_dir = {d}/state
instance_name = {self.instance}
log_path = {self.log_path}
info_log_path = /dev/null
debug_log_path = /dev/null
{users}protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.certificate}
ssl_key = <{self.key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain
auth_cache_size = 0
passdb {{
  driver = passwd-file
  args = {self.users_file}
}}
userdb {{
  driver = static
  args = uid={self.mail_user.uid} gid={self.mail_user.gid} home={self.mail_root}/%u
}}
first_valid_uid = {self.mail_user.uid}
last_valid_uid = 0
first_valid_gid = {self.mail_user.gid}
mail_location = maildir:{self.mail_root}/%u
pop3_no_flag_updates = yes
pop3_lock_session = yes
mail_max_userip_connections = {sessions}
default_process_limit = {sessions}
default_client_limit = {sessions + 1000}
default_vsz_limit = 1G
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.ports["plain"]}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.ports["implicit"]}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {self.cpus}
  process_limit = {self.cpus}
  client_limit = {sessions}
{chroot}}}
service pop3 {{
  service_count = 100
  process_limit = {sessions}
  client_limit = 1
}}
service anvil {{
{chroot}}}
"""

    def start(self) -> None:
        for sub in ("run", "state"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        with open(self.config_path, "w") as f:
            f.write(self.config_text())
        self._spawn([self.BINARY, "-F", "-c", self.config_path], self.log_path)
        for port in self.ports.values():
            _wait_accepting(port, self.process, "dovecot", self.log_path)
        # process_min_avail login processes are forked after the listeners
        # open; let them come up before anyone measures memory.
        deadline = time.monotonic() + 5
        while self._login_processes() < self.cpus and time.monotonic() < deadline:
            time.sleep(0.05)

    def _login_processes(self) -> int:
        return sum(1 for p in process_tree(self.pid) if b"pop3-login" in _cmdline(p))

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            tree = process_tree(self.pid)
            super().stop()
            # The master stops its children; any that linger (they run as
            # other users, in the master's session) go now.
            for pid in tree:
                if self.instance.encode() in _cmdline(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def version(self) -> str:
        out = subprocess.run([self.BINARY, "--version"], capture_output=True, text=True,
                             timeout=10)
        return "Dovecot " + out.stdout.strip()

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def warnings(self) -> str:
        """The lines Dovecot logged at start that say a limit is too low."""
        return "\n".join(line for line in _tail(self.log_path, 200).splitlines()
                         if "master: Warning" in line)
