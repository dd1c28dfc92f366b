#!/usr/bin/env python3
"""The postgres module against a real PostgreSQL, as an operator and a
client see it: odd and hostile user names, every password scheme stored in
a table, a site's own password_query (and broken ones), mailbox locks
shared by two popkitd on one database (renewal, a crashed holder),
PostgreSQL stopped or crashed under running sessions, delivery that leaves
nothing behind when it dies, a 50 MB message read in bounded memory, and a
slow query that holds up nobody else.

One PostgreSQL serves the whole file (the harness's shared cluster); every
test gets databases of its own through PopkitServer(store="postgres").
Servers that only need another server's database take the maildir store
with the postgres module configured by hand, so they cost no database.
"""

import hashlib
import json
import os
import re
import select
import signal
import subprocess
import time

import popkit_harness
from popkit_harness import (MODULES_DIR, POPKIT_DELIVER, POPKITD, PopkitTestCase,
                            crlf_form, run_tests, special_messages, wire_body)
from test_auth_policy import ScramClient, challenge_of

EX_OK, EX_NOUSER, EX_TEMPFAIL = 0, 67, 75
AUTH_FAILED = "-ERR [AUTH] Authentication failed."
AUTH_TEMP = "-ERR [SYS/TEMP] Temporary authentication failure, try again later."
IN_USE = "-ERR [IN-USE] Mailbox is locked by another POP3 session."
READ_TEMP = "-ERR [SYS/TEMP] The message cannot be read now, try again later."
DELETE_TEMP = "-ERR [SYS/TEMP] Deleting messages failed, none were deleted."
# Generous bounds for what must happen "within seconds" (recovery, lease
# expiry); sanitizer builds are several times slower.
RECOVERY_BOUND_S = 15
MESSAGE = b"From: a@test.local\nTo: b@test.local\nSubject: hi\n\nhello\n.dot line\n"

cluster = None


def setUpModule():
    global cluster
    cluster = popkit_harness.shared_pg_cluster()


def tearDownModule():
    cluster.cleanup()


def postgres_module(conninfo: str, **settings) -> dict:
    return dict({"module": "postgres", "conninfo": conninfo}, **settings)


def sanitizer_free(text: str) -> bool:
    return not any(m in text for m in popkit_harness.SANITIZER_MARKERS)


class PostgresTestCase(PopkitTestCase):
    def pg_server(self, config=None, start=True, **module_settings):
        """A popkitd whose users and mail live in a new database; module
        settings go to both the auth and the store module."""
        server = self.make_server(start=False, store="postgres")
        if module_settings or config:
            extra = dict(config or {})
            extra["auth"] = [postgres_module(server.conninfo, **module_settings)]
            extra["store"] = postgres_module(server.conninfo, **module_settings)
            server.config.update(extra)
        if start:
            server.start()
        return server

    def server_on(self, conninfo: str, auth=None, store=None, config=None, start=True):
        """A popkitd on an existing database (no database of its own)."""
        server = self.make_server(start=False, store="maildir", config=config)
        server.config["auth"] = [auth or postgres_module(conninfo)]
        server.config["store"] = store or postgres_module(conninfo)
        if start:
            server.start()
        return server

    def client(self, server, timeout=10.0):
        c = server.raw(timeout=timeout)
        self.addCleanup(c.close)
        return c

    def login_reply(self, server, user, password) -> str:
        """The reply to PASS (the session is closed afterwards)."""
        c = server.raw()
        try:
            self.assertEqual(c.cmd(b"USER " + as_bytes(user)), "+OK Send PASS.")
            return c.cmd(b"PASS " + as_bytes(password))
        finally:
            c.close()

    def logged_in(self, server, user, password):
        c = self.client(server)
        c.login(user, password)
        return c

    def deliver(self, server, user, message: bytes, timeout=120):
        return subprocess.run(
            [POPKIT_DELIVER, "-c", server.config_path, "--modules-dir", MODULES_DIR, user],
            input=message, capture_output=True, timeout=timeout)

    def assert_delivered(self, result, code=EX_OK):
        stderr = result.stderr.decode("utf-8", "replace")
        self.assertEqual(result.returncode, code,
                         "popkit-deliver exited %d, expected %d: %s" % (
                             result.returncode, code, stderr))
        self.assertTrue(sanitizer_free(stderr), stderr)

    def check_config(self, server, config: dict):
        path = os.path.join(server.dir, "check.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        return subprocess.run([POPKITD, "-c", path, "--check-config", "--modules-dir",
                               MODULES_DIR], capture_output=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def count(self, server, sql: str, **variables) -> int:
        return int(server.sql(sql, **variables)[0][0])

    def mailbox_count(self, server, mailbox: str) -> int:
        return self.count(server, "SELECT count(*) FROM popkit.messages m"
                          " JOIN popkit.mailboxes b ON b.id = m.mailbox_id"
                          " WHERE b.name = :'mailbox';", mailbox=mailbox)

    def retr(self, client, index: int) -> bytes:
        reply = client.cmd("RETR %d" % index)
        self.assertTrue(reply.startswith("+OK"), reply)
        return client.multiline_wire()


def as_bytes(value) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def poll(what, bound_s: float, step_s: float = 0.2):
    """Calls what() until it returns a true value, at most bound_s
    seconds; returns that value, or the last one."""
    deadline = time.monotonic() + bound_s
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step_s)


# ---- 1. Injection and odd names --------------------------------------------


class Names(PostgresTestCase):
    ODD_NAMES = ["back\\slash", "100%", "$1", 'say "hi"', "m\u00fcller", "o'brien"]
    INJECTIONS = ["x'; DROP TABLE popkit.users; --", "' OR '1'='1", "' OR name <> '"]

    def test_odd_names_log_in_and_read_their_mail(self):
        server = self.pg_server(start=False)
        for i, name in enumerate(self.ODD_NAMES):
            server.add_user(name, "pw %d" % i)
            server.add_message(name, MESSAGE + name.encode("utf-8") + b"\n")
        server.start()
        for i, name in enumerate(self.ODD_NAMES):
            with self.subTest(user=name):
                c = self.logged_in(server, name, "pw %d" % i)
                self.assertEqual(self.retr(c, 1),
                                 wire_body(MESSAGE + name.encode("utf-8") + b"\n"))
                self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")
                # Somebody else's password does not open it.
                self.assertEqual(self.login_reply(server, name, "pw %d" % (i + 1)),
                                 AUTH_FAILED)

    def test_sql_in_a_name_is_only_a_name(self):
        server = self.pg_server(start=False)
        server.add_user("alice", "alice pw")
        server.add_message("alice", MESSAGE)
        server.start()
        users_before = server.sql("SELECT name, password FROM popkit.users ORDER BY name;")
        for name in self.INJECTIONS:
            with self.subTest(user=name):
                # A query built by pasting the name would fail (SYS/TEMP),
                # return every row (SYS/TEMP), or drop the table.
                self.assertEqual(self.login_reply(server, name, "alice pw"), AUTH_FAILED)
        self.assertEqual(server.sql("SELECT name, password FROM popkit.users ORDER BY name;"),
                         users_before)
        self.assertEqual(self.login_reply(server, "alice", "alice pw")[:3], "+OK")
        # And such a name may be a real user.
        server.add_user(self.INJECTIONS[0], "drop pw")
        server.add_message(self.INJECTIONS[0], MESSAGE)
        c = self.logged_in(server, self.INJECTIONS[0], "drop pw")
        self.assertEqual(self.retr(c, 1), wire_body(MESSAGE))
        self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")
        self.assertEqual(self.count(server, "SELECT count(*) FROM popkit.users;"), 2)

    def test_a_name_that_is_not_utf8_is_refused_as_auth(self):
        server = self.pg_server(start=False)
        server.add_user("alice", "alice pw")
        server.start()
        for password in (b"alice pw", b"x"):
            with self.subTest(password=password):
                self.assertEqual(self.login_reply(server, b"\xff\xfe", password), AUTH_FAILED)
        self.assertEqual(self.login_reply(server, "alice", "alice pw")[:3], "+OK")
        self.assertIn("auth failed", server.stderr_text())
        self.assertNotIn("backend unavailable", server.stderr_text())

    def test_mailbox_name_with_a_quote_takes_delivery_and_is_read(self):
        server = self.pg_server(start=False)
        server.add_user("dora", "dora pw")
        server.sql("UPDATE popkit.users SET mailbox = :'box' WHERE name = 'dora';",
                   box="o'brien's box")
        server.start()
        self.assert_delivered(self.deliver(server, "dora", MESSAGE))
        self.assertEqual(self.mailbox_count(server, "o'brien's box"), 1)
        self.assertEqual(self.mailbox_count(server, "dora"), 0)
        c = self.logged_in(server, "dora", "dora pw")
        self.assertEqual(c.cmd("LIST 1"), "+OK 1 %d" % len(crlf_form(MESSAGE)))
        self.assertEqual(self.retr(c, 1), wire_body(MESSAGE))
        self.assertEqual(c.cmd("DELE 1"), "+OK Message 1 marked to be deleted.")
        self.assertEqual(c.cmd("QUIT"), "+OK Logging out, 1 messages deleted.")
        self.assertEqual(self.mailbox_count(server, "o'brien's box"), 0)


# ---- 2. Password schemes ---------------------------------------------------


class Schemes(PostgresTestCase):
    SCHEMES = ["plain", "sha512", "yescrypt", "bcrypt", "scram-sha-256"]

    def setUp(self):
        self.server = self.pg_server(config={"apop": True}, start=False)
        for scheme in self.SCHEMES:
            self.server.add_user("u-" + scheme, "pw of " + scheme, scheme)
            self.server.add_message("u-" + scheme, MESSAGE)
        self.server.start()

    def test_user_pass_with_every_scheme(self):
        for scheme in self.SCHEMES:
            user, password = "u-" + scheme, "pw of " + scheme
            with self.subTest(scheme=scheme):
                self.assertEqual(self.login_reply(self.server, user, password + "x"),
                                 AUTH_FAILED)
                self.assertEqual(self.login_reply(self.server, user, ""), AUTH_FAILED)
                c = self.logged_in(self.server, user, password)
                self.assertEqual(c.cmd("STAT"), "+OK 1 %d" % len(crlf_form(MESSAGE)))
                self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")

    def scram(self, user, password):
        c = self.client(self.server)
        scram = ScramClient(user, password)
        self.assertEqual(c.cmd("AUTH SCRAM-SHA-256"), "+ ")
        server_first = c.cmd(scram.client_first())
        return c, scram, c.cmd(scram.client_final(challenge_of(server_first)))

    def test_scram_sha_256_with_a_stored_scram_secret(self):
        c, scram, server_final = self.scram("u-scram-sha-256", "pw of scram-sha-256")
        scram.check_server_final(challenge_of(server_final))
        self.assertTrue(c.cmd("").startswith("+OK Logged in"))
        self.assertEqual(c.cmd("STAT"), "+OK 1 %d" % len(crlf_form(MESSAGE)))
        self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")
        c, _, reply = self.scram("u-scram-sha-256", "not the password")
        self.assertEqual(reply, AUTH_FAILED)

    def test_apop_with_a_plain_secret(self):
        c = self.client(self.server)
        match = re.search(r"(<[^<>]+>)$", c.greeting)
        self.assertIsNotNone(match, c.greeting)
        digest = hashlib.md5((match.group(1) + "pw of sha512").encode()).hexdigest()
        self.assertEqual(c.cmd("APOP u-plain " + digest), AUTH_FAILED)
        digest = hashlib.md5((match.group(1) + "pw of plain").encode()).hexdigest()
        self.assertTrue(c.cmd("APOP u-plain " + digest).startswith("+OK Logged in"))
        self.assertEqual(c.cmd("STAT"), "+OK 1 %d" % len(crlf_form(MESSAGE)))

    def test_null_password_opens_nothing(self):
        # A site locks a user by clearing the secret (its own table may
        # allow NULL; popkit's does not, so this one is altered).
        self.server.sql("ALTER TABLE popkit.users ALTER COLUMN password DROP NOT NULL;"
                        " UPDATE popkit.users SET password = NULL WHERE name = 'u-plain';")
        for password in ("pw of plain", "", "*", "{PLAIN}", "NULL"):
            with self.subTest(password=password):
                self.assertEqual(self.login_reply(self.server, "u-plain", password),
                                 AUTH_FAILED)
        _, _, reply = self.scram("u-plain", "pw of plain")
        self.assertEqual(reply, AUTH_FAILED)
        c = self.client(self.server)
        timestamp = re.search(r"(<[^<>]+>)$", c.greeting).group(1)
        digest = hashlib.md5((timestamp + "pw of plain").encode()).hexdigest()
        self.assertEqual(c.cmd("APOP u-plain " + digest), AUTH_FAILED)
        self.assertNotIn("backend unavailable", self.server.stderr_text())


# ---- 3. A site's own query, and broken ones ---------------------------------


SITE_QUERY = ("SELECT secret AS password, maildrop AS mailbox"
              " FROM site.accounts WHERE login = $1")


class SiteQuery(PostgresTestCase):
    def site_server(self):
        """A site with its own accounts table; popkit's users table is
        empty. "twin" has two rows, as a table without a key may."""
        server = self.pg_server(start=False, password_query=SITE_QUERY)
        server.sql("CREATE SCHEMA site;"
                   " CREATE TABLE site.accounts (login text, secret text, maildrop text);"
                   " GRANT USAGE ON SCHEMA site TO popkit;"
                   " GRANT SELECT ON site.accounts TO popkit;"
                   " INSERT INTO site.accounts VALUES"
                   " ('carol', '{PLAIN}carol pw', 'drop/carol'),"
                   " ('dave', '{PLAIN}dave pw', NULL),"
                   " ('twin', '{PLAIN}twin pw', 'twin-a'),"
                   " ('twin', '{PLAIN}twin pw', 'twin-b');")
        server.add_message("drop/carol", MESSAGE)
        server.start()
        return server

    def test_site_query_with_its_own_columns(self):
        server = self.site_server()
        c = self.logged_in(server, "carol", "carol pw")
        self.assertEqual(self.retr(c, 1), wire_body(MESSAGE))
        self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")
        self.assertEqual(self.login_reply(server, "carol", "dave pw"), AUTH_FAILED)
        self.assertEqual(self.login_reply(server, "nobody", "carol pw"), AUTH_FAILED)
        # A NULL mailbox is the user's own name; delivery finds it the same way.
        self.assert_delivered(self.deliver(server, "dave", MESSAGE))
        self.assertEqual(self.mailbox_count(server, "dave"), 1)
        self.assert_delivered(self.deliver(server, "carol", MESSAGE))
        self.assertEqual(self.mailbox_count(server, "drop/carol"), 2)
        self.assert_delivered(self.deliver(server, "nobody", MESSAGE), EX_NOUSER)

    def test_two_rows_for_one_user_is_sys_temp(self):
        server = self.site_server()
        for password in ("twin pw", "wrong"):
            self.assertEqual(self.login_reply(server, "twin", password), AUTH_TEMP)
        self.assertTrue(server.wait_for_log("password_query returned 2 rows"),
                        server.stderr_text())
        self.assert_delivered(self.deliver(server, "twin", MESSAGE), EX_TEMPFAIL)
        self.assertEqual(self.mailbox_count(server, "twin-a") +
                         self.mailbox_count(server, "twin-b") +
                         self.mailbox_count(server, "twin"), 0)

    def test_a_query_postgresql_refuses_is_sys_temp_and_logged(self):
        site = self.site_server()
        broken = self.server_on(site.conninfo, auth=postgres_module(
            site.conninfo, password_query="SELEC secret AS password FROM site.accounts"
            " WHERE login = $1"))
        for user, password in (("carol", "carol pw"), ("nobody", "x")):
            self.assertEqual(self.login_reply(broken, user, password), AUTH_TEMP)
        self.assertTrue(broken.wait_for_log("password_query: 42601"), broken.stderr_text())
        log = [line for line in broken.stderr_text().splitlines()
               if "password_query" in line]
        self.assertTrue(any("syntax error" in line for line in log), log)

    def test_check_config_names_the_bad_key(self):
        server = self.pg_server(start=False)
        server.write_config()
        good = dict(server.config)
        cases = [
            ("password_query", {"password_query": "SELECT password FROM popkit.users"}),
            ("conninfo", {"conninfo": "host=127.0.0.1 dbname"}),
            ("conninfo", {"conninfo": "host='unterminated"}),
            ("lock_ttl_s", {"lock_ttl_s": 1}),
        ]
        for key, bad in cases:
            with self.subTest(bad=bad):
                config = dict(good, auth=[dict(good["auth"][0], **bad)])
                if key == "lock_ttl_s":
                    config = dict(good, store=dict(good["store"], **bad))
                result = self.check_config(server, config)
                stderr = result.stderr.decode("utf-8", "replace")
                self.assertEqual(result.returncode, 1, stderr)
                self.assertIn(key, stderr)
                self.assertTrue(sanitizer_free(stderr), stderr)

    def test_check_config_does_not_connect(self):
        server = self.pg_server(start=False)
        server.write_config()
        # Nobody listens on this port: --check-config must pass anyway.
        dead = "host=127.0.0.1 port=%d dbname=mail user=popkit" % popkit_harness.free_port()
        config = dict(server.config, auth=[postgres_module(dead)],
                      store=postgres_module(dead))
        result = self.check_config(server, config)
        stderr = result.stderr.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 0, stderr)
        self.assertTrue(sanitizer_free(stderr), stderr)


# ---- 4. Two popkitd on one database ----------------------------------------


class SharedLocks(PostgresTestCase):
    TTL_S = 3

    def two_hosts(self):
        a = self.pg_server(start=False, lock_ttl_s=self.TTL_S)
        a.add_user("alice", "alice pw")
        a.add_message("alice", MESSAGE)
        a.start()
        module = postgres_module(a.conninfo, lock_ttl_s=self.TTL_S)
        b = self.server_on(a.conninfo, auth=module, store=module)
        return a, b

    def test_a_mailbox_open_on_one_host_is_in_use_on_the_other(self):
        a, b = self.two_hosts()
        on_a = self.logged_in(a, "alice", "alice pw")
        self.assertEqual(self.login_reply(b, "alice", "alice pw"), IN_USE)
        self.assertEqual(on_a.cmd("QUIT"), "+OK Logging out.")
        on_a.close()
        # QUIT answers after the lock is given back: B gets in at once.
        on_b = self.logged_in(b, "alice", "alice pw")
        self.assertEqual(self.login_reply(a, "alice", "alice pw"), IN_USE)
        self.assertEqual(on_b.cmd("QUIT"), "+OK Logging out.")
        self.assertEqual(self.count(a, "SELECT count(*) FROM popkit.mailbox_locks;"), 0)

    def test_a_long_session_keeps_its_lock(self):
        a, b = self.two_hosts()
        on_a = self.logged_in(a, "alice", "alice pw")
        time.sleep(2 * self.TTL_S + 1)
        self.assertEqual(self.login_reply(b, "alice", "alice pw"), IN_USE)
        self.assertEqual(on_a.cmd("DELE 1"), "+OK Message 1 marked to be deleted.")
        self.assertEqual(on_a.cmd("QUIT"), "+OK Logging out, 1 messages deleted.")
        self.assertEqual(self.mailbox_count(a, "alice"), 0)

    def test_the_lock_of_a_killed_popkitd_expires(self):
        a, b = self.two_hosts()
        on_a = self.logged_in(a, "alice", "alice pw")
        self.assertEqual(on_a.cmd("DELE 1"), "+OK Message 1 marked to be deleted.")
        a.signal(signal.SIGKILL)
        a.wait_exit(10)
        a.process = None  # nothing left for the harness to stop
        self.assertEqual(self.login_reply(b, "alice", "alice pw"), IN_USE)

        def try_b():
            reply = self.login_reply(b, "alice", "alice pw")
            self.assertIn(reply[:3], ("+OK", IN_USE[:3]), reply)
            if reply.startswith("-ERR"):
                self.assertEqual(reply, IN_USE)
            return reply.startswith("+OK")

        self.assertTrue(poll(try_b, self.TTL_S + 5), "the lease never expired")
        # The killed session deleted nothing.
        self.assertEqual(self.mailbox_count(a, "alice"), 1)


# ---- 5. PostgreSQL goes away and comes back ---------------------------------


class Outage(PostgresTestCase):
    def outage(self, take_down):
        server = self.pg_server(start=False)
        for user in ("alice", "bob", "carol"):
            server.add_user(user, user + " pw")
            for i in range(3):
                server.add_message(user, MESSAGE + b"%s %d\n" % (user.encode(), i))
        server.start()
        pid = server.process.pid
        first = self.logged_in(server, "alice", "alice pw")   # will QUIT while down
        second = self.logged_in(server, "bob", "bob pw")      # lives through it
        listing = second.cmd("LIST"), second.multiline()
        uidl = second.cmd("UIDL"), second.multiline()
        self.addCleanup(lambda: cluster.running() or cluster.start_again())

        take_down()
        self.assertFalse(cluster.running())
        self.assertEqual(second.cmd("STAT"), "+OK 3 %d" % sum(
            len(crlf_form(MESSAGE + b"bob %d\n" % i)) for i in range(3)))
        self.assertEqual((second.cmd("LIST"), second.multiline()), listing)
        self.assertEqual((second.cmd("UIDL"), second.multiline()), uidl)
        self.assertEqual(second.cmd("RETR 2"), READ_TEMP)
        self.assertEqual(second.cmd("NOOP"), "+OK Still here.")
        self.assertEqual(first.cmd("DELE 1"), "+OK Message 1 marked to be deleted.")
        self.assertEqual(first.cmd("QUIT"), DELETE_TEMP)
        for password in ("carol pw", "wrong"):
            self.assertEqual(self.login_reply(server, "carol", password), AUTH_TEMP)
        self.assert_delivered(self.deliver(server, "carol", MESSAGE), EX_TEMPFAIL)
        # --check-config never connects, so it passes while PostgreSQL is down.
        check = self.check_config(server, server.config)
        self.assertEqual(check.returncode, 0, check.stderr)

        cluster.start_again()

        def carol_logs_in():
            reply = self.login_reply(server, "carol", "carol pw")
            # The auth and store instances reconnect each on their own:
            # either may still answer [SYS/TEMP], neither ever [AUTH].
            if not reply.startswith("+OK"):
                self.assertTrue(reply.startswith("-ERR [SYS/TEMP]"), reply)
            return reply.startswith("+OK")

        self.assertTrue(poll(carol_logs_in, RECOVERY_BOUND_S),
                        "no login within %d s of PostgreSQL's return" % RECOVERY_BOUND_S)
        self.assertEqual(server.process.pid, pid)
        self.assertIsNone(server.process.poll())
        # What the operator reads: one line per connection pool that found
        # PostgreSQL gone (2 workers, an auth and a store instance each),
        # not one per failed query; and, as each of those pools gets back
        # in the background, one line that says so.
        self.assertTrue(server.wait_for_log("is reachable again", RECOVERY_BOUND_S))
        log = server.stderr_text()
        down_lines = log.count("; trying again in the background")
        self.assertGreaterEqual(down_lines, 1, log)
        self.assertLessEqual(down_lines, 4, log)

        def bob_reads():
            reply = second.cmd("RETR 2")
            if reply.startswith("+OK"):
                return second.multiline_wire()
            self.assertEqual(reply, READ_TEMP)
            return None

        self.assertEqual(poll(bob_reads, RECOVERY_BOUND_S), wire_body(MESSAGE + b"bob 1\n"))
        self.assertEqual(second.cmd("DELE 2"), "+OK Message 2 marked to be deleted.")
        self.assertEqual(second.cmd("QUIT"), "+OK Logging out, 1 messages deleted.")
        self.assertEqual(self.mailbox_count(server, "bob"), 2)
        self.assertEqual(self.mailbox_count(server, "alice"), 3)  # nothing deleted
        self.assertEqual(self.mailbox_count(server, "carol"), 3)  # nothing delivered
        self.assert_delivered(self.deliver(server, "carol", MESSAGE))
        self.assertEqual(self.mailbox_count(server, "carol"), 4)

    def test_postgresql_stopped_and_started_again(self):
        self.outage(cluster.stop)

    def test_postgresql_crashes_and_is_started_again(self):
        self.outage(cluster.kill)


# ---- 6. Delivery -----------------------------------------------------------


class Delivery(PostgresTestCase):
    def setUp(self):
        self.server = self.pg_server(start=False)
        self.server.add_user("alice", "alice pw")
        self.server.write_config()

    def test_delivered_mail_reads_back_byte_exact(self):
        messages = [raw for _, raw in special_messages()[:-1]]
        # Pieces are 64 KiB: one message ends exactly on a piece, one just after.
        messages.append(b"Subject: edge\n\n" + b"x" * (65536 - 16) + b"\n")
        messages.append(b"Subject: edge+1\n\n" + b".\n" * 40000 + b"tail")
        for raw in messages:
            self.assert_delivered(self.deliver(self.server, "alice", raw))
        self.server.start()
        c = self.logged_in(self.server, "alice", "alice pw")
        for i, raw in enumerate(messages, 1):
            with self.subTest(message=i):
                size = int(c.cmd("LIST %d" % i).split()[2])
                wire = self.retr(c, i)
                self.assertEqual(wire, wire_body(raw))
                # What the client keeps: unstuffed, without the terminator.
                kept = b"".join(line + b"\r\n" for line in
                                [l[1:] if l.startswith(b".") else l
                                 for l in wire[:-3].split(b"\r\n")[:-1]])
                self.assertEqual(size, len(kept))

    def test_killed_delivery_leaves_nothing(self):
        self.assert_delivered(self.deliver(self.server, "alice", MESSAGE))
        process = subprocess.Popen(
            [POPKIT_DELIVER, "-c", self.server.config_path, "--modules-dir", MODULES_DIR,
             "alice"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self.addCleanup(process.stdin.close)
        self.addCleanup(lambda: process.poll() is not None or process.kill())
        process.stdin.write(b"Subject: half\n\n" + (b"z" * 99 + b"\n") * 10000)  # 1 MB
        process.stdin.flush()
        db = self.server.pg_db

        def writing_pieces():
            rows = self.server.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :'db'"
                " AND usename = 'popkit' AND backend_xid IS NOT NULL"
                " AND query LIKE '%message_chunks%';", db=db)
            return int(rows[0][0]) > 0

        self.assertTrue(poll(writing_pieces, RECOVERY_BOUND_S, 0.05),
                        "popkit-deliver never wrote a piece")
        process.kill()
        process.wait()

        def backend_gone():
            return self.count(self.server, "SELECT count(*) FROM pg_stat_activity"
                              " WHERE datname = :'db' AND usename = 'popkit';", db=db) == 0

        self.assertTrue(poll(backend_gone, RECOVERY_BOUND_S, 0.05))
        self.assertEqual(self.mailbox_count(self.server, "alice"), 1)
        self.assertEqual(self.count(self.server, "SELECT count(*) FROM popkit.messages;"), 1)
        self.assertEqual(self.count(self.server,
                                    "SELECT count(*) FROM popkit.message_chunks c"
                                    " LEFT JOIN popkit.messages m ON m.id = c.message_id"
                                    " WHERE m.id IS NULL OR m.size <> %d;"
                                    % len(crlf_form(MESSAGE))), 0)

    def test_two_deliveries_to_a_new_mailbox_both_land(self):
        self.assertEqual(self.count(self.server, "SELECT count(*) FROM popkit.mailboxes;"), 0)
        first, second = MESSAGE + b"one\n", MESSAGE + b"two\n"
        self.assert_delivered(self.deliver(self.server, "alice", first))
        self.assert_delivered(self.deliver(self.server, "alice", second))
        self.assertEqual(self.count(self.server, "SELECT count(*) FROM popkit.mailboxes;"), 1)
        self.server.start()
        c = self.logged_in(self.server, "alice", "alice pw")
        self.assertEqual(c.cmd("STAT"), "+OK 2 %d" % (len(crlf_form(first)) +
                                                      len(crlf_form(second))))
        self.assertEqual(self.retr(c, 1), wire_body(first))
        self.assertEqual(self.retr(c, 2), wire_body(second))


# ---- 7. A 50 MB message in bounded memory ---------------------------------


def big_lines(count: int):
    """The lines of a big message: LF ends, no CR, one line in 97 starting
    with a dot (so dot-stuffing crosses every chunk boundary of popkitd)."""
    yield b"From: big@test.local\nTo: alice@test.local\nSubject: 50 MB\n\n"
    for i in range(count):
        lead = b"." if i % 97 == 0 else b""
        yield lead + b"%08d the quick brown fox jumps over the lazy dog 0123456789\n" % i


def wire_of_lines(block: bytes) -> bytes:
    """wire_body() without the terminator, for LF-only text made of whole
    lines: each LF becomes CRLF and a leading dot is doubled."""
    return re.sub(rb"(?m)^\.", b"..", block).replace(b"\n", b"\r\n")


class BigMessage(PostgresTestCase):
    LINES = 50 * 1024 * 1024 // 64  # lines of 64 bytes: 50 MiB
    RSS_GROWTH_LIMIT_KIB = 16 * 1024

    def test_50_mb_retr_keeps_memory_flat(self):
        # The fast expected-bytes path agrees with the harness's reference.
        sample = b"".join(big_lines(300))
        self.assertEqual(wire_of_lines(sample) + b".\r\n", wire_body(sample))

        # ASan keeps freed memory in quarantine (256 MB by default), which
        # would count every freed piece as resident; a small one keeps the
        # measure about what popkitd holds.
        asan = os.environ.get("ASAN_OPTIONS", "")
        server = self.make_server(start=False, store="postgres", env={
            "ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=4"})
        server.add_user("alice", "alice pw")
        server.write_config()
        deliver = subprocess.Popen(
            [POPKIT_DELIVER, "-c", server.config_path, "--modules-dir", MODULES_DIR,
             "alice"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        # The message goes to popkit-deliver a block at a time, and what a
        # client must receive is hashed on the way: it is never whole here.
        expected, crlf_size, wire_size, block = hashlib.sha256(), 0, 0, []

        def flush_block():
            nonlocal crlf_size, wire_size
            data = b"".join(block)
            block.clear()
            deliver.stdin.write(data)
            crlf_size += len(data) + data.count(b"\n")
            wire = wire_of_lines(data)
            wire_size += len(wire)
            expected.update(wire)

        for line in big_lines(self.LINES):
            block.append(line)
            if len(block) == 16384:
                flush_block()
        flush_block()
        expected.update(b".\r\n")
        wire_size += 3
        deliver.stdin.close()
        stderr = deliver.stderr.read().decode("utf-8", "replace")
        deliver.stderr.close()
        self.assertEqual(deliver.wait(timeout=120), 0, stderr)
        self.assertTrue(sanitizer_free(stderr), stderr)
        self.assertGreater(crlf_size, 50 * 1000 * 1000)

        server.start()
        c = self.logged_in(server, "alice", "alice pw")
        self.assertEqual(c.cmd("LIST 1"), "+OK 1 %d" % crlf_size)
        baseline = peak = server.rss_kib()
        self.assertEqual(c.cmd("RETR 1"), "+OK %d octets" % crlf_size)
        # Reads of 64 KiB with pauses: popkitd meets a slow reader and
        # must wait for it rather than buffer the message.
        got, received = hashlib.sha256(), 0
        while received < wire_size:
            data = c.file.read1(min(65536, wire_size - received))
            if not data:
                self.fail("connection closed after %d of %d bytes" % (received, wire_size))
            got.update(data)
            received += len(data)
            peak = max(peak, server.rss_kib())
            time.sleep(0.001)
        self.assertEqual(got.hexdigest(), expected.hexdigest())
        self.assertLess(peak - baseline, self.RSS_GROWTH_LIMIT_KIB,
                        "popkitd grew by %d KiB while sending a %d-byte message" % (
                            peak - baseline, crlf_size))
        self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")


# ---- 8. A slow PostgreSQL holds up only those who wait on it ---------------


SLEEPY_QUERY = ("WITH pause AS (SELECT pg_sleep(CASE WHEN $1 = 'slow' THEN %d ELSE 0 END))"
                " SELECT password, mailbox FROM popkit.users, pause WHERE name = $1")


class SlowQueries(PostgresTestCase):
    def test_a_slow_query_does_not_hold_up_other_sessions(self):
        server = self.pg_server(config={"workers": 1}, start=False,
                                password_query=SLEEPY_QUERY % 3)
        for user in ("slow", "fast"):
            server.add_user(user, user + " pw")
            server.add_message(user, MESSAGE)
        server.start()
        slow = self.client(server)
        self.assertEqual(slow.cmd("USER slow"), "+OK Send PASS.")
        slow.send("PASS slow pw\r\n")
        fast = self.logged_in(server, "fast", "fast pw")
        self.assertEqual(fast.cmd("STAT"), "+OK 1 %d" % len(crlf_form(MESSAGE)))
        self.assertEqual(self.retr(fast, 1), wire_body(MESSAGE))
        self.assertEqual(fast.cmd("QUIT"), "+OK Logging out.")
        # The fast session is over, and slow's PASS is still unanswered.
        readable, _, _ = select.select([slow.sock], [], [], 0)
        self.assertEqual(readable, [], "the slow login finished before the fast session")
        self.assertTrue(slow.line().startswith("+OK Logged in"))

    def test_query_timeout_is_sys_temp(self):
        server = self.pg_server(start=False, password_query=SLEEPY_QUERY % 3,
                                query_timeout_s=1)
        for user in ("slow", "fast"):
            server.add_user(user, user + " pw")
        server.start()
        self.assertEqual(self.login_reply(server, "slow", "slow pw"), AUTH_TEMP)
        self.assertTrue(server.wait_for_log("query_timeout_s"), server.stderr_text())
        # The pool recovers from the connection it gave up.
        self.assertTrue(self.login_reply(server, "fast", "fast pw").startswith("+OK"))


if __name__ == "__main__":
    run_tests()
