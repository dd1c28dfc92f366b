#!/usr/bin/env python3
"""A real PostgreSQL server for popkit's integration tests.

PostgresCluster runs the distribution's own server binaries (initdb,
pg_ctl, postgres) on a data directory in a temporary directory: listening
on 127.0.0.1 and a port the kernel picked, its unix socket in that
directory, fsync off (a test never needs to survive a power cut; commits
stay synchronous, so a killed server loses nothing it said was committed,
as a real one would not). Every database it creates holds popkit's schema
(modules/postgres/schema.sql), and the LOGIN role "popkit" gets what
grants.sql gives it, exactly as an admin following the README would set a
site up.

PostgreSQL refuses to run as root. On a CI machine that runs the tests as
root, the server runs as the "postgres" system user Debian's package
creates; the test itself (psql, popkitd) stays root.

A cluster is stopped and its directory removed by cleanup(), at the latest
when the interpreter exits (atexit); a watchdog process does the same if
the test process is killed outright (a ctest timeout sends SIGKILL), so no
test leaves a postgres behind.

Run this file to check a machine: it starts a cluster, uses it, restarts
it, kills it and restarts it again, and prints what each step cost.
"""

import atexit
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import time

from server_process import (ServerInDirectory, free_port, pid_working_in, run_watchdog,
                            start_watchdog, timed_step, wait_gone)

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_SQL = os.path.join(HERE, "..", "..", "modules", "postgres", "schema.sql")
GRANTS_SQL = os.path.join(HERE, "..", "..", "modules", "postgres", "grants.sql")

PG_ROOT = "/usr/lib/postgresql"
ADMIN_ROLE = "popkit_admin"
POPKIT_ROLE = "popkit"
SERVER_USER_WHEN_ROOT = "postgres"

# psql's unaligned output: fields end at the unit separator, rows at the
# record separator, and NULL prints as the group separator, so values with
# newlines and empty strings come back intact.
FIELD_SEPARATOR = "\x1f"
RECORD_SEPARATOR = "\x1e"
NULL_MARKER = "\x1d"

PSQL_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
PSQL_TIMEOUT_S = 120


def find_server_binaries() -> str:
    """The bin directory of the highest PostgreSQL version installed."""
    found = []
    if os.path.isdir(PG_ROOT):
        for entry in os.listdir(PG_ROOT):
            bindir = os.path.join(PG_ROOT, entry, "bin")
            version = tuple(int(part) for part in re.findall(r"\d+", entry))
            if version and all(os.access(os.path.join(bindir, tool), os.X_OK)
                               for tool in ("initdb", "pg_ctl", "postgres", "psql")):
                found.append((version, bindir))
    if not found:
        raise RuntimeError(
            "no PostgreSQL server found: the postgres tests need initdb, pg_ctl, "
            "postgres and psql in %s/<version>/bin; packaging/install-deps.sh "
            "installs them (Debian package postgresql)" % PG_ROOT)
    return max(found)[1]


def conf_quote(value: str) -> str:
    """A string value for postgresql.conf."""
    return "'" + value.replace("'", "''") + "'"


def conninfo_value(value: str) -> str:
    """A value for a libpq conninfo string: plain names stay readable in
    logs, anything else is quoted."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def postmaster_pid(data_dir: str):
    """The pid of data_dir's postmaster if it runs, else None."""
    return pid_working_in(os.path.join(data_dir, "postmaster.pid"), data_dir)


def children_of(pid: int) -> list:
    """The pids whose parent is pid (a postmaster's backends)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return out


def wait_reaped(pids, timeout: float) -> bool:
    """Whether every pid has left /proc (zombies included) in time."""
    deadline = time.monotonic() + timeout
    while any(os.path.exists("/proc/%d" % p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class PostgresCluster(ServerInDirectory):
    """One PostgreSQL server in a temporary directory (self.dir): data/
    (the cluster), postgres.log, and the unix socket."""

    def __init__(self):
        super().__init__()
        self.bindir = find_server_binaries()
        self.host = "127.0.0.1"
        self.data_dir = self.log_path = self.port = None
        self._server_user = None
        self._role_created = False
        self._database_seq = 0
        # The caller's PG* variables (PGHOST, PGSERVICE...) must not steer
        # our psql elsewhere; the C locale suits any encoding.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.env["LC_ALL"] = "C"

    # -- the server's programs --

    def _tool(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def _run(self, argv: list, timeout: float):
        """Run a server program, as the postgres user when we are root."""
        if self._server_user is not None:
            argv = ["runuser", "-u", self._server_user, "--"] + argv
        result = subprocess.run(argv, cwd=self.dir, env=self.env,
                                stdin=subprocess.DEVNULL, capture_output=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError("%s exited with %d:\n%s%s\n---- postgres.log ----\n%s" % (
                " ".join(argv), result.returncode,
                result.stdout.decode("utf-8", "replace"),
                result.stderr.decode("utf-8", "replace"), self.log_text()))
        return result

    # -- life cycle --

    def start(self):
        """initdb in a new temporary directory, then start the server."""
        if self.dir is not None:
            raise RuntimeError("this PostgresCluster was started already")
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
            except KeyError:
                raise RuntimeError(
                    "PostgreSQL refuses to run as root and there is no %r user to "
                    "run it as; packaging/install-deps.sh installs the postgresql "
                    "package, which creates it" % SERVER_USER_WHEN_ROOT) from None
            self._server_user = owner.pw_name
        atexit.register(self.cleanup)
        self.dir = tempfile.mkdtemp(prefix="popkit-pg-")
        if owner is not None:
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self._watchdog = start_watchdog(__file__, self.dir, self.env)
        self._run([self._tool("initdb"), "-D", self.data_dir, "-U", ADMIN_ROLE,
                   "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
                  timeout=START_TIMEOUT_S)
        # Settings go into postgresql.conf rather than through pg_ctl -o,
        # which hands its argument to a shell.
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as f:
            f.write("\n# popkit tests: a throwaway server\n")
            for key, value in (("listen_addresses", conf_quote(self.host)),
                               ("unix_socket_directories", conf_quote(self.dir)),
                               ("fsync", "off"),
                               ("full_page_writes", "off"),
                               ("max_connections", "200")):
                f.write("%s = %s\n" % (key, value))
        # A port free a moment ago may be taken by the time the server
        # binds it: try another then.
        for attempt in range(5):
            self.port = free_port()
            try:
                self._pg_ctl_start()
                return self
            except RuntimeError:
                if attempt == 4 or "could not bind" not in self.log_text():
                    raise
        return self

    def _pg_ctl_start(self):
        # -o goes through a shell; a number is all it carries.
        self._run([self._tool("pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT_S),
                   "-D", self.data_dir, "-l", self.log_path, "-o", "-p %d" % self.port],
                  timeout=START_TIMEOUT_S + 10)

    def start_again(self):
        """Start the stopped (or killed) server on the same data and port."""
        if self.running():
            raise RuntimeError("PostgreSQL is running already")
        self._pg_ctl_start()
        return self

    def stop(self, mode: str = "fast"):
        """pg_ctl stop -m mode (smart, fast or immediate), and wait."""
        self._run([self._tool("pg_ctl"), "stop", "-w", "-t", str(STOP_TIMEOUT_S),
                   "-D", self.data_dir, "-m", mode], timeout=STOP_TIMEOUT_S + 10)

    def kill(self):
        """SIGKILL the postmaster, as a crash would, and wait until its
        backends have noticed and gone, so that start_again() works."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("PostgreSQL is not running")
        children = children_of(pid)
        os.kill(pid, signal.SIGKILL)
        if not wait_gone([pid] + children, 30):
            # Backends notice a dead postmaster at their next wait; one
            # that has not after this long is killed too.
            for child in children:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_gone(children, 10)
        # PostgreSQL takes a lock file whose pid still exists (a zombie
        # not yet reaped by init) for a running server. This one is dead:
        # its lock files go, as an admin would remove them after a crash.
        if not wait_reaped([pid], 5):
            for lock in (os.path.join(self.data_dir, "postmaster.pid"),
                         os.path.join(self.dir, ".s.PGSQL.%d.lock" % self.port)):
                try:
                    os.unlink(lock)
                except FileNotFoundError:
                    pass

    def postmaster_pid(self):
        return postmaster_pid(self.data_dir) if self.data_dir else None

    def running(self) -> bool:
        return self.postmaster_pid() is not None

    def end_server(self):
        """cleanup()'s stop: PostgreSQL's immediate shutdown, else SIGKILL."""
        if self.running():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                self.kill()

    # -- databases and SQL --

    def conninfo(self, dbname: str, user: str = POPKIT_ROLE) -> str:
        return "host=%s port=%d dbname=%s user=%s" % (
            self.host, self.port, conninfo_value(dbname), conninfo_value(user))

    def create_database(self, name: str = None) -> str:
        """A new database holding popkit's schema, where the role popkit
        may do what grants.sql says; returns the conninfo popkitd uses."""
        if name is None:
            self._database_seq += 1
            name = "popkit_test_%d" % self._database_seq
        if not self._role_created:
            self.psql("postgres", 'CREATE ROLE :"role" LOGIN;', role=POPKIT_ROLE)
            self._role_created = True
        self.psql("postgres", 'CREATE DATABASE :"name";', name=name)
        with open(SCHEMA_SQL, encoding="utf-8") as f:
            schema = f.read()
        with open(GRANTS_SQL, encoding="utf-8") as f:
            grants = f.read()
        self.psql(name, schema + "\n" + grants, role=POPKIT_ROLE)
        return self.conninfo(name)

    def psql(self, dbname: str, sql: str, **variables) -> list:
        """Run sql (psql's stdin) in dbname as the admin role; returns the
        rows the statements printed, as tuples of str (None for NULL).

        Values reach SQL only as psql variables: -v name=value, used as
        :'name' (a literal), :"name" (an identifier) or :name (as is).
        Values that hold the separators U+001D..U+001F come back garbled.
        """
        argv = [self._tool("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                "-F", FIELD_SEPARATOR, "-R", RECORD_SEPARATOR,
                "-P", "null=" + NULL_MARKER,
                "-d", self.conninfo(dbname, ADMIN_ROLE)]
        for key, value in variables.items():
            if not PSQL_VARIABLE.fullmatch(key):
                raise ValueError("not a psql variable name: %r" % key)
            argv += ["-v", "%s=%s" % (key, value)]
        result = subprocess.run(argv, input=sql.encode("utf-8"), capture_output=True,
                                env=self.env, timeout=PSQL_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError("psql exited with %d in database %s:\n%s" % (
                result.returncode, dbname, result.stderr.decode("utf-8", "replace")))
        out = result.stdout.decode("utf-8")
        if out.endswith("\n"):
            out = out[:-1]
        if not out:
            return []
        return [tuple(None if field == NULL_MARKER else field
                      for field in record.split(FIELD_SEPARATOR))
                for record in out.split(RECORD_SEPARATOR)]


def _stop_cluster(directory: str):
    """The watchdog's stop (run_watchdog): PostgreSQL's immediate shutdown,
    then SIGKILL."""
    data_dir = os.path.join(directory, "data")
    pid = postmaster_pid(data_dir) if os.path.isdir(data_dir) else None
    if pid is not None:
        os.kill(pid, signal.SIGQUIT)
        if not wait_gone([pid], 20):
            os.kill(pid, signal.SIGKILL)
            wait_gone([pid], 10)


def _self_check():
    """Every method once, with what it cost."""
    cluster = PostgresCluster()
    print("server binaries: %s, run as %s" % (
        cluster.bindir, SERVER_USER_WHEN_ROOT if os.geteuid() == 0 else "this user"))
    timed_step("start (initdb, pg_ctl)", cluster.start)
    directory = cluster.dir
    try:
        conninfo = timed_step("create_database", cluster.create_database)
        print("conninfo:", conninfo)
        dbname = "popkit_test_1"
        rows = timed_step("psql, o'brien", cluster.psql, dbname,
                    "INSERT INTO popkit.users (name, password) VALUES (:'name', :'pw') "
                    "RETURNING name, mailbox, password, '';",
                    name="o'brien", pw="{PLAIN}a b\nc")
        assert rows == [("o'brien", None, "{PLAIN}a b\nc", "")], rows
        timed_step("stop", cluster.stop)
        assert not cluster.running()
        timed_step("start_again", cluster.start_again)
        timed_step("kill", cluster.kill)
        assert not cluster.running()
        timed_step("start_again after kill", cluster.start_again)
        assert cluster.psql(dbname, "SELECT name FROM popkit.users;") == [("o'brien",)]
        # The role popkit reads users, and may not change them.
        as_popkit = [cluster._tool("psql"), "-X", "-At", "-d", conninfo, "-c"]
        check = subprocess.run(as_popkit + ["SELECT count(*) FROM popkit.users"],
                               capture_output=True, env=cluster.env)
        assert check.stdout == b"1\n", check
        check = subprocess.run(as_popkit + ["DELETE FROM popkit.users"],
                               capture_output=True, env=cluster.env)
        assert b"permission denied" in check.stderr, check
    finally:
        timed_step("cleanup", cluster.cleanup)
    assert not os.path.exists(directory)
    print("ok")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--watchdog":
        run_watchdog(sys.argv[2], _stop_cluster)
    else:
        _self_check()
