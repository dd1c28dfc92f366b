#!/usr/bin/env python3
"""A real Redis server for popkit's integration tests.

RedisServer runs the distribution's redis-server (Debian package
redis-server) in a temporary directory: listening on 127.0.0.1 and a port
the kernel picked, no persistence (a test's cache is thrown away with it),
its log in DIR/redis.log. Tests make it fail the ways a cache fails in
production: stop() and start_again() on the same port (Redis restarted, its
data gone), pause() and resume() (SIGSTOP, SIGCONT: a Redis that accepts
connections and answers nothing, as a swapping or stuck one does).

A server is stopped and its directory removed by cleanup(), at the latest
when the interpreter exits (atexit); a watchdog process does the same if
the test process is killed outright (a ctest timeout sends SIGKILL), so no
test leaves a redis-server behind.

There is no Redis library for Python on the machines that run the tests,
so command() speaks RESP2 itself: a command is an array of bulk strings,
a reply is parsed back into Python values.

Run this file to check a machine: it starts a server, uses it, pauses,
restarts and stops it, and prints what each step cost.
"""

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from server_process import (ServerInDirectory, free_port, kill_and_wait, pid_working_in,
                            run_watchdog, start_watchdog, timed_step)

REDIS_SERVER = "redis-server"
START_TIMEOUT_S = 20
COMMAND_TIMEOUT_S = 10


class RedisError(Exception):
    """An error reply ("-ERR ...") from Redis."""


def encode_command(args) -> bytes:
    """A RESP array of bulk strings: binary-safe, what every client sends."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def read_reply(file):
    """One RESP2 reply from a binary file: bytes (bulk string), str
    (status), int, list, None (nil); an error reply raises RedisError."""
    line = file.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("Redis closed the connection mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode("utf-8", "replace")
    if kind == b"-":
        raise RedisError(rest.decode("utf-8", "replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        length = int(rest)
        if length < 0:
            return None
        data = file.read(length + 2)
        if len(data) != length + 2:
            raise ConnectionError("Redis closed the connection mid-reply")
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [read_reply(file) for _ in range(count)]
    raise ConnectionError("not a RESP reply: %r" % line)


def redis_pid(directory: str):
    """The pid of directory's redis-server if it runs, else None."""
    return pid_working_in(os.path.join(directory, "redis.pid"), directory)


class RedisServer(ServerInDirectory):
    """One redis-server in a temporary directory (self.dir): redis.log,
    redis.pid. self.address is what redis-cache's "address" takes."""

    def __init__(self):
        self.host = "127.0.0.1"
        super().__init__()
        self.port = None

    @property
    def address(self) -> str:
        return "%s:%d" % (self.host, self.port)

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "redis.log")

    # -- life cycle --

    def start(self):
        """A new server in a new temporary directory on a free port."""
        if self.dir is not None:
            raise RuntimeError("this RedisServer was started already")
        if shutil.which(REDIS_SERVER) is None:
            raise RuntimeError(
                "no redis-server found: the redis tests need it on PATH; "
                ".ci/run and packaging/install-deps.sh install it (Debian package "
                "redis-server)")
        atexit.register(self.cleanup)
        self.dir = tempfile.mkdtemp(prefix="popkit-redis-")
        self._watchdog = start_watchdog(__file__, self.dir)
        # A port free a moment ago may be taken by the time the server
        # binds it: try another then.
        for attempt in range(5):
            self.port = free_port()
            try:
                return self._launch()
            except RuntimeError:
                if attempt == 4 or "Address already in use" not in self.log_text():
                    raise
        return self

    def _launch(self):
        argv = [REDIS_SERVER,
                "--bind", self.host, "--port", str(self.port),
                "--dir", self.dir, "--pidfile", os.path.join(self.dir, "redis.pid"),
                "--logfile", self.log_path, "--daemonize", "no",
                "--save", "", "--appendonly", "no",
                # DEBUG lets a test make Redis slow (DEBUG SLEEP); the server
                # listens on loopback only.
                "--enable-debug-command", "yes"]
        self.process = subprocess.Popen(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.paused = False
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("redis-server exited with %d before answering:\n%s" %
                                   (self.process.returncode, self.log_text()))
            try:
                if self.command("PING") == "PONG":
                    return self
            except (OSError, ConnectionError, RedisError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server does not answer on %s after %d s:\n%s" %
                                   (self.address, START_TIMEOUT_S, self.log_text()))
            time.sleep(0.02)

    def start_again(self):
        """Start the stopped server on the same port (with no data)."""
        if self.running():
            raise RuntimeError("Redis is running already")
        return self._launch()


    # -- commands --

    def command(self, *args, timeout: float = COMMAND_TIMEOUT_S):
        """Send one command on a new connection and return the reply (see
        read_reply). A connection per command: a test that stops or
        pauses the server finds no half-dead connection here."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(encode_command(args))
            with sock.makefile("rb") as file:
                return read_reply(file)

    def all_keys(self, pattern: str = "*") -> list:
        """Every key matching pattern, with SCAN (as a careful admin would
        on a live server), sorted."""
        keys, cursor = set(), b"0"
        while True:
            cursor, batch = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            keys.update(batch)
            if cursor == b"0":
                return sorted(keys)

    def get(self, key):
        return self.command("GET", key)


def _self_check():
    """Every method once, with what it cost."""
    server = RedisServer()
    timed_step("start", server.start)
    directory = server.dir
    try:
        print("address:", server.address)
        assert timed_step("SET", server.command, "SET", "k\r\n\0", b"v\xff", "EX", 60) == "OK"
        assert server.get("k\r\n\0") == b"v\xff"
        assert server.command("TTL", "k\r\n\0") > 0
        assert server.all_keys() == [b"k\r\n\0"]
        assert server.get("nothing") is None
        try:
            server.command("NOSUCHCOMMAND")
            raise AssertionError("no error reply")
        except RedisError as e:
            assert "unknown command" in str(e), e
        timed_step("pause", server.pause)
        try:
            server.command("PING", timeout=0.3)
            raise AssertionError("a paused server answered")
        except socket.timeout:
            pass
        timed_step("resume", server.resume)
        assert server.command("PING") == "PONG"
        timed_step("stop", server.stop)
        assert not server.running()
        port = server.port
        timed_step("start_again", server.start_again)
        assert server.port == port and server.command("DBSIZE") == 0
    finally:
        timed_step("cleanup", server.cleanup)
    assert not os.path.exists(directory)
    print("ok")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--watchdog":
        run_watchdog(sys.argv[2], lambda directory: kill_and_wait(redis_pid(directory)))
    else:
        _self_check()
