#!/usr/bin/env python3
"""SIGTERM: popkitd stops accepting, lets running sessions finish until
shutdown_timeout_s, then closes them with -ERR [SYS/TEMP]; deletions of a
session that did not QUIT are not applied; the process exits 0."""

import signal
import socket
import time

from popkit_harness import PopkitTestCase, run_tests

PASSWORD = "pw"


class Shutdown(PopkitTestCase):
    def server_with_mail(self, shutdown_timeout_s: int):
        server = self.make_server({"limits": {"shutdown_timeout_s": shutdown_timeout_s}},
                                  start=False)
        server.add_user("alice", PASSWORD)
        self.names = [server.add_message("alice", b"Subject: %d\n\nbody %d\n" % (i, i))
                      for i in range(3)]
        server.start()
        return server

    def assert_refuses_connections(self, server, within_s: float = 5.0):
        deadline = time.monotonic() + within_s
        while True:
            try:
                probe = socket.create_connection((server.host, server.port), timeout=1)
            except (ConnectionRefusedError, ConnectionResetError):
                return
            # Accepted by a listener that has not noticed the signal yet,
            # or queued in a backlog: try again shortly.
            probe.close()
            if time.monotonic() > deadline:
                self.fail("popkitd still accepts connections %.0f s after SIGTERM" % within_s)
            time.sleep(0.05)

    def test_idle_server_exits_promptly(self):
        server = self.make_server()
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        server.check_exit(server.wait_exit(10))
        self.assertLess(time.monotonic() - started, 5)

    def test_running_session_finishes_and_its_quit_commits(self):
        server = self.server_with_mail(20)
        client = server.raw()
        self.addCleanup(client.close)
        client.login("alice", PASSWORD)
        self.assertTrue(client.cmd("DELE 2").startswith("+OK"))
        server.signal(signal.SIGTERM)
        self.assert_refuses_connections(server)
        # The session in progress is still served...
        self.assertEqual(client.cmd("STAT").split()[1], "2")
        self.assertTrue(client.cmd("RETR 1").startswith("+OK"))
        client.multiline_wire()
        # ...and its QUIT commits as usual.
        self.assertTrue(client.cmd("QUIT").startswith("+OK"))
        client.wait_closed(5)
        self.assertEqual(server.message_files("alice"),
                         sorted([self.names[0], self.names[2]]))
        # With no session left, popkitd ends without waiting for the deadline.
        started = time.monotonic()
        server.check_exit(server.wait_exit(10))
        self.assertLess(time.monotonic() - started, 10)

    def test_session_past_the_deadline_is_closed_and_deletes_nothing(self):
        server = self.server_with_mail(1)
        client = server.raw()
        self.addCleanup(client.close)
        client.login("alice", PASSWORD)
        self.assertTrue(client.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(client.cmd("DELE 3").startswith("+OK"))
        waiting = server.raw()  # a session still in AUTHORIZATION
        self.addCleanup(waiting.close)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        rest = client.wait_closed(10)
        self.assertTrue(rest.startswith(b"-ERR [SYS/TEMP]"), rest)
        self.assertTrue(rest.endswith(b"\r\n"), rest)
        self.assertGreaterEqual(time.monotonic() - started, 0.8)
        self.assertTrue(waiting.wait_closed(10).startswith(b"-ERR"))
        server.check_exit(server.wait_exit(10))
        self.assertEqual(server.message_files("alice"), sorted(self.names))


if __name__ == "__main__":
    run_tests()
