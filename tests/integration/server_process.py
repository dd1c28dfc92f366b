"""What the test servers (pg_cluster.py, redis_server.py, slapd_server.py) share: picking a
port, watching processes by pid, and a watchdog that stops a server and
removes its directory when the test process ends in any way, SIGKILL
included (a ctest timeout), so no test leaves a server behind.
"""

import os
import signal
import shutil
import socket
import subprocess
import sys
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, picked by the kernel."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def process_alive(pid: int) -> bool:
    """Whether pid runs (a zombie waiting to be reaped does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids, timeout: float) -> bool:
    """Whether every pid has stopped running in time."""
    deadline = time.monotonic() + timeout
    while any(process_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def pid_working_in(pid_file: str, directory: str):
    """The pid in pid_file if that process runs with directory as its
    working directory, else None: the pid of a stale file may belong to
    anything by now."""
    try:
        with open(pid_file) as f:
            pid = int(f.readline())
        if os.path.samefile(os.readlink("/proc/%d/cwd" % pid), directory) \
                and process_alive(pid):
            return pid
    except (OSError, ValueError):
        pass
    return None


# ---- The watchdog ---------------------------------------------------------


def start_watchdog(script: str, directory: str, env=None) -> subprocess.Popen:
    """Starts `python3 script --watchdog directory` (see run_watchdog),
    which acts once our end of its stdin pipe closes: when this process
    ends, in any way. sh starts it in the background and exits, so it is
    no child of ours and survives a kill of our process tree. Close the
    returned Popen's stdin (stop_watchdog) once the directory is gone."""
    argv = [sys.executable, os.path.abspath(script), "--watchdog", directory]
    # A background job of a non-interactive sh gets /dev/null as its stdin;
    # the pipe reaches it through fd 3.
    watchdog = subprocess.Popen(
        ["sh", "-c", 'exec 3<&0; "$@" 0<&3 3<&- &', "sh"] + argv,
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    watchdog.wait()  # sh is done; its job runs on
    return watchdog


def stop_watchdog(watchdog):
    """Lets the watchdog go: it finds nothing left to stop."""
    if watchdog is not None:
        watchdog.stdin.close()


def kill_and_wait(pid) -> None:
    """The watchdog's stop (run_watchdog) for a server with nothing to save:
    SIGKILL, which works on a stopped (paused) server too, then wait until
    it is gone. pid None: nothing runs."""
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        wait_gone([pid], 10)


def run_watchdog(directory: str, stop_server):
    """The watchdog's body: wait for EOF on stdin, then stop_server(directory)
    if the directory is still there, and remove it."""
    try:
        os.setsid()
    except OSError:
        pass  # a session leader already: no terminal signal reaches us
    while os.read(0, 4096):
        pass
    if os.path.isdir(directory):
        stop_server(directory)
    shutil.rmtree(directory, ignore_errors=True)


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of pid is stopped (state T in /proc)."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return False
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid), "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # the thread is gone
        if state != b"T":
            return False
    return True


class ServerInDirectory:
    """What the test servers share: a temporary directory of their own with
    a watchdog, made by the subclass's start(), and their log
    (self.log_path). Redis and slapd also share their one child process
    (self.process); PostgreSQL's postmaster is pg_ctl's, so pg_cluster.py
    ends it its own way (end_server)."""

    def __init__(self):
        self.dir = self.process = None
        self.paused = False
        self._watchdog = None

    def pause(self):
        """SIGSTOP: connections are still accepted by the kernel, and
        nothing is answered. Returns once every thread has stopped: kill()
        returns before, and a thread already running could still answer
        the next request."""
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True
        deadline = time.monotonic() + 5
        while not _all_threads_stopped(self.process.pid):
            if time.monotonic() > deadline:
                raise RuntimeError("pid %d did not stop within 5 s of SIGSTOP" %
                                   self.process.pid)
            time.sleep(0.001)

    def resume(self):
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20):
        """SIGTERM (a paused server is resumed first so it can obey), and
        wait until it is gone."""
        if self.process is None:
            return
        if self.paused:
            self.resume()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def end_server(self):
        """Ends the server however it is: cleanup() runs it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # SIGKILL works on a stopped process too
            self.process.wait()
        self.process = None

    def cleanup(self):
        """Stop the server if it runs and remove the directory."""
        if self.dir is None:
            return
        try:
            self.end_server()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            stop_watchdog(self._watchdog)
            self._watchdog = None

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""


def timed_step(label: str, func, *args, **kwargs):
    """Runs func and prints what it cost: the servers' self-checks."""
    started = time.monotonic()
    value = func(*args, **kwargs)
    print("%-30s %6.3f s" % (label, time.monotonic() - started))
    return value
