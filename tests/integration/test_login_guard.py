#!/usr/bin/env python3
"""The login guard as a password guesser meets it: every failed login from
an address holds its -ERR back longer (doubling, capped), any attempt from
that address during the penalty waits (on any connection), a success
clears the slate, loopback is exempt unless told otherwise; connections
per address and sessions per user are capped; and the log line fail2ban
reads names the guesser's address.

Times are asserted as lower bounds (a timer never fires early); the few
upper bounds only separate "capped" or "reset" from "doubled again", with
a margin of a second.
"""

import base64
import re
import socket
import time

from popkit_harness import PopkitTestCase, run_tests

PASSWORD = "guard pw"
AUTH_FAILED = "-ERR [AUTH] Authentication failed."
TOO_MANY_CONNECTIONS = "-ERR [SYS/TEMP] Too many connections from your address, try later."
TOO_MANY_SESSIONS = "-ERR [IN-USE] Too many sessions for this user, try later."

DELAY_MS, DELAY_MAX_MS = 300, 1200
# A timer may fire up to a loop tick before the wall-clock millisecond.
EARLY_S = 0.02

FAIL2BAN_FAILREGEX = r'^\S+ warning conn=\d+ ip=<HOST>(?: user="(?:[^"\\]|\\.)*")?: auth failed: '
FAIL2BAN = re.compile(FAIL2BAN_FAILREGEX.replace("<HOST>", r"(?P<host>\S+)"))


def penalty_s(failure: int) -> float:
    """The penalty of the n-th failure in a row, in seconds."""
    return min(DELAY_MS * 2 ** (failure - 1), DELAY_MAX_MS) / 1000


class GuardTestCase(PopkitTestCase):
    def start(self, limits, tls=False):
        server = self.make_server({"limits": limits}, start=False, tls=tls)
        server.add_user("alice", PASSWORD)
        server.add_user("bob", PASSWORD)
        server.start()
        return server

    def client(self, server):
        client = server.raw(timeout=30)
        self.addCleanup(client.close)
        return client

    def timed(self, client, command) -> tuple:
        """(reply, seconds it took)."""
        start = time.monotonic()
        reply = client.cmd(command)
        return reply, time.monotonic() - start

    def fail_login(self, client, user="alice") -> float:
        """A failed USER/PASS; returns how long the -ERR took."""
        self.assertEqual(client.cmd("USER " + user), "+OK Send PASS.")
        reply, took = self.timed(client, "PASS wrong")
        self.assertEqual(reply, AUTH_FAILED)
        return took


class Penalties(GuardTestCase):
    def setUp(self):
        self.server = self.start({"exempt_loopback": False,
                                  "auth_failure_delay_ms": DELAY_MS,
                                  "auth_failure_delay_max_ms": DELAY_MAX_MS})

    def test_each_failure_waits_longer_up_to_the_cap(self):
        client = self.client(self.server)
        took = [self.fail_login(client) for _ in range(4)]
        for n, seconds in enumerate(took, 1):
            self.assertGreaterEqual(seconds, penalty_s(n) - EARLY_S,
                                    "failure %d answered after %.3f s" % (n, seconds))
        # The 4th would take 2.4 s if it doubled again.
        self.assertLess(took[3], 2 * DELAY_MAX_MS / 1000 - 0.1)

    def test_auth_plain_failures_are_penalised_too(self):
        client = self.client(self.server)
        response = base64.b64encode(b"\0alice\0wrong").decode()
        reply, took = self.timed(client, "AUTH PLAIN " + response)
        self.assertEqual(reply, AUTH_FAILED)
        self.assertGreaterEqual(took, penalty_s(1) - EARLY_S)

    def test_attempt_on_another_connection_waits_for_the_penalty(self):
        first, second = self.client(self.server), self.client(self.server)
        self.fail_login(first)  # penalty 1 over: its -ERR came after it
        self.assertEqual(first.cmd("USER alice"), "+OK Send PASS.")
        self.assertEqual(second.cmd("USER alice"), "+OK Send PASS.")
        failures = self.server.stderr_text().count("auth failed")
        start = time.monotonic()
        first.send("PASS wrong\r\n")  # failure 2: penalty 600 ms
        self.assertTrue(self.server.wait_for_log_count("auth failed", failures + 1))
        # The right password, during the penalty, on the other connection.
        reply, _ = self.timed(second, "PASS " + PASSWORD)
        waited = time.monotonic() - start
        self.assertTrue(reply.startswith("+OK Logged in"), reply)
        self.assertGreaterEqual(waited, penalty_s(2) - EARLY_S)
        self.assertEqual(first.line(), AUTH_FAILED)
        self.assertEqual(second.cmd("QUIT"), "+OK Logging out.")

    def test_success_resets_the_penalty(self):
        client = self.client(self.server)
        self.fail_login(client)
        self.fail_login(client)
        client.login("alice", PASSWORD)
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")
        client = self.client(self.server)
        took = self.fail_login(client)
        self.assertGreaterEqual(took, penalty_s(1) - EARLY_S)
        # Not reset, it would be the third failure: 1.2 s.
        self.assertLess(took, penalty_s(3) - 0.1)

    def test_client_leaving_while_its_error_is_held_back(self):
        failures = self.server.stderr_text().count("auth failed")
        client = self.client(self.server)
        self.assertEqual(client.cmd("USER alice"), "+OK Send PASS.")
        client.send("PASS wrong\r\n")
        self.assertTrue(self.server.wait_for_log_count("auth failed", failures + 1))
        client.abort()
        client = self.client(self.server)
        client.login("alice", PASSWORD)
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_attempt_of_a_client_that_left_is_not_carried_out(self):
        # A client (say one that timed out) sends the right password during
        # a penalty and leaves. Its attempt must die with it: logging it in
        # after the penalty would lock the mailbox for nobody (the client's
        # reconnect, woken by the same penalty, would get [IN-USE]), clear
        # the penalty, and log a login that never was.
        self.fail_login(self.client(self.server))
        self.fail_login(self.client(self.server))  # the next penalty: 1.2 s
        ghost = self.client(self.server)
        self.assertEqual(ghost.cmd("USER bob"), "+OK Send PASS.")
        failures = self.server.stderr_text().count("auth failed")
        client = self.client(self.server)
        self.assertEqual(client.cmd("USER alice"), "+OK Send PASS.")
        client.send("PASS wrong\r\n")
        self.assertTrue(self.server.wait_for_log_count("auth failed", failures + 1))
        ghost.send("PASS %s\r\n" % PASSWORD)
        ghost.abort()
        self.assertEqual(client.line(), AUTH_FAILED)
        # bob's attempt waited for the same penalty as alice's -ERR: by
        # now popkitd has either dropped it or carried it out.
        time.sleep(0.5)
        self.assertNotIn('user="bob": logged in', self.server.stderr_text())

    def test_unknown_user_is_penalised_like_a_wrong_password(self):
        client = self.client(self.server)
        took = self.fail_login(client, user="nobody")
        self.assertGreaterEqual(took, penalty_s(1) - EARLY_S)


class LoopbackExempt(GuardTestCase):
    def test_loopback_is_exempt_by_default(self):
        server = self.start({"auth_failure_delay_ms": 5000,
                             "auth_failure_delay_max_ms": 15000})
        client = self.client(server)
        for _ in range(2):
            self.assertLess(self.fail_login(client), 3.0)
        client.login("alice", PASSWORD)
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")


class ConnectionCaps(GuardTestCase):
    def connect_until_accepted(self, server, timeout=5.0):
        """A connection that got the greeting. A connection that closed a
        moment ago may still be counted until popkitd has released it, so
        a refusal is retried for a few seconds."""
        deadline = time.monotonic() + timeout
        while True:
            client = server.raw(timeout=30)
            if client.greeting.startswith("+OK"):
                self.addCleanup(client.close)
                return client
            client.close()
            if time.monotonic() > deadline:
                self.fail("still refused after %.0f s: %s" % (timeout, client.greeting))
            time.sleep(0.05)

    def test_connections_per_ip(self):
        server = self.start({"exempt_loopback": False, "max_connections_per_ip": 3})
        clients = [self.connect_until_accepted(server) for _ in range(3)]
        fourth = self.client(server)
        self.assertEqual(fourth.greeting, TOO_MANY_CONNECTIONS)
        self.assertEqual(fourth.wait_closed(), b"")
        self.assertIn("refused: max_connections_per_ip reached", server.stderr_text())
        # The three are still served.
        clients[1].login("alice", PASSWORD)
        self.assertEqual(clients[1].cmd("QUIT"), "+OK Logging out.")
        clients[1].wait_closed()
        # One closed: a new one gets in.
        again = self.connect_until_accepted(server)
        self.assertEqual(again.greeting, "+OK popkit ready.")
        self.assertEqual(self.client(server).greeting, TOO_MANY_CONNECTIONS)

    def test_implicit_tls_listener_just_closes(self):
        # No handshake is spent on a refused client, so there is no way to
        # send it a reply it could read.
        server = self.start({"exempt_loopback": False, "max_connections_per_ip": 1},
                            tls=True)
        holder = self.connect_until_accepted(server)
        refused = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
        self.addCleanup(refused.close)
        self.assertEqual(refused.recv(100), b"")
        self.assertEqual(holder.cmd("QUIT"), "+OK Logging out.")

    def test_loopback_exempt_from_connections_per_ip_by_default(self):
        server = self.start({"max_connections_per_ip": 2})
        clients = [self.client(server) for _ in range(4)]
        for client in clients:
            self.assertEqual(client.greeting, "+OK popkit ready.")

    def test_sessions_per_user(self):
        server = self.start({"max_sessions_per_user": 1})
        first = self.client(server)
        first.login("alice", PASSWORD)
        second = self.client(server)
        self.assertEqual(second.cmd("USER alice"), "+OK Send PASS.")
        self.assertEqual(second.cmd("PASS " + PASSWORD), TOO_MANY_SESSIONS)
        # Another user is not affected, and the refused session may retry.
        other = self.client(server)
        other.login("bob", PASSWORD)
        self.assertEqual(other.cmd("QUIT"), "+OK Logging out.")
        self.assertEqual(first.cmd("QUIT"), "+OK Logging out.")
        first.wait_closed()
        deadline = time.monotonic() + 5
        while True:
            self.assertEqual(second.cmd("USER alice"), "+OK Send PASS.")
            reply = second.cmd("PASS " + PASSWORD)
            if reply != TOO_MANY_SESSIONS or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertTrue(reply.startswith("+OK Logged in"), reply)
        self.assertEqual(second.cmd("QUIT"), "+OK Logging out.")


class Fail2banRegex(GuardTestCase):
    def matches(self, text) -> list:
        return [m for m in map(FAIL2BAN.match, text.splitlines()) if m]

    def test_failregex_matches_failures_only(self):
        server = self.start({})
        client = self.client(server)
        log_start = len(server.stderr_text())
        client.login("alice", PASSWORD)
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")
        client.wait_closed()
        success_lines = server.stderr_text()[log_start:]
        self.assertIn("logged in", success_lines)
        self.assertEqual(self.matches(success_lines), [])

        # A failure of a plain name, of an unknown name, and of a name that
        # tries to smuggle another address into the line.
        names = ["alice", "nobody", 'x" ip=10.6.6.6 user="y', "back\\slash",
                 "esc\x1b[31m\ttab"]
        log_start = len(server.stderr_text())
        client = self.client(server)
        for name in names:
            self.fail_login(client, user=name)
        deadline = time.monotonic() + 5
        while (len(self.matches(server.stderr_text()[log_start:])) < len(names) and
               time.monotonic() < deadline):
            time.sleep(0.05)
        found = self.matches(server.stderr_text()[log_start:])
        self.assertEqual([m.group("host") for m in found], ["127.0.0.1"] * len(names),
                         server.stderr_text()[log_start:])
        for match in found:
            self.assertIn(" warning ", match.string)

    def test_failed_sasl_is_matched_too(self):
        server = self.start({})
        client = self.client(server)
        log_start = len(server.stderr_text())
        reply = client.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong").decode())
        self.assertEqual(reply, AUTH_FAILED)
        found = self.matches(server.stderr_text()[log_start:])
        self.assertEqual([m.group("host") for m in found], ["127.0.0.1"])


if __name__ == "__main__":
    run_tests()
