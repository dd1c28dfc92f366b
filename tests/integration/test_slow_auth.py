#!/usr/bin/env python3
"""Asynchronous auth modules and the auth chain, with tests/modules'
slow_auth.so: it answers for users whose name starts with "slow" after
delay_ms, NOT_FOUND for everybody else, and logs
"slow_auth: request canceled" when popkitd cancels a pending request."""

import os
import shutil
import time

from popkit_harness import (MODULES_DIR, TEST_MODULES_DIR, PopkitTestCase,
                            run_tests, wire_body)

CANCEL_LINE = "slow_auth: request canceled"
MESSAGE = b"From: a@test.local\nSubject: meanwhile\n\n.dot\nbody\n"


class SlowAuth(PopkitTestCase):
    def modules_dir(self) -> str:
        """popkitd reads one modules dir: give it the real modules and
        slow_auth side by side."""
        path = os.path.join(self.scratch, "modules")
        os.mkdir(path)
        for source, name in ((MODULES_DIR, "maildir.so"), (MODULES_DIR, "passwd-file.so"),
                             (TEST_MODULES_DIR, "slow_auth.so")):
            shutil.copy(os.path.join(source, name), path)
        return path

    def slow_server(self, delay_ms: int):
        import tempfile
        self.scratch = tempfile.mkdtemp(prefix="popkit-it-mods-")
        self.addCleanup(shutil.rmtree, self.scratch, True)
        modules = self.modules_dir()
        server = self.make_server(start=False, modules_dir=modules)
        server.config["auth"] = [
            {"module": "slow_auth", "password": "pw", "delay_ms": delay_ms},
            {"module": "passwd-file", "path": server.users_path},
        ]
        server.config["log"] = {"level": "debug"}
        server.add_user("alice", "alice-pw")
        server.add_user("slowfile", "file-pw")
        server.add_message("alice", MESSAGE)
        server.start()
        return server

    def test_client_leaving_cancels_the_request_and_others_are_served(self):
        server = self.slow_server(3000)
        slow = server.raw()
        self.addCleanup(slow.close)
        self.assertTrue(slow.cmd("USER slowpoke").startswith("+OK"))
        started = time.monotonic()
        slow.send("PASS pw\r\n")
        # While slow_auth holds that request, both workers keep serving.
        for _ in range(4):
            other = server.raw()
            other.login("alice", "alice-pw")
            self.assertTrue(other.cmd("RETR 1").startswith("+OK"))
            self.assertEqual(other.multiline_wire(), wire_body(MESSAGE))
            self.assertTrue(other.cmd("QUIT").startswith("+OK"))
            other.close()
        self.assertLess(time.monotonic() - started, 2.5,
                        "other sessions waited for the slow login")
        slow.abort()
        self.assertTrue(server.wait_for_log(CANCEL_LINE, timeout=2.0),
                        "no %r in the log after the client left" % CANCEL_LINE)
        # Canceled before the delay ran out, not completed and then dropped.
        self.assertLess(time.monotonic() - started, 3.0)

    def test_slow_login_completes_after_the_delay(self):
        server = self.slow_server(1500)
        client = server.raw()
        self.addCleanup(client.close)
        self.assertTrue(client.cmd("USER slowcoach").startswith("+OK"))
        started = time.monotonic()
        self.assertTrue(client.cmd("PASS pw").startswith("+OK"))
        self.assertGreaterEqual(time.monotonic() - started, 1.4)
        self.assertEqual(client.cmd("STAT"), "+OK 0 0")
        self.assertTrue(client.cmd("QUIT").startswith("+OK"))
        self.assertNotIn(CANCEL_LINE, server.stderr_text())

    def test_chain_moves_on_after_not_found(self):
        server = self.slow_server(0)
        # A passwd-file user: slow_auth says NOT_FOUND, passwd-file answers.
        client = server.raw()
        self.addCleanup(client.close)
        client.login("alice", "alice-pw")
        self.assertEqual(client.cmd("STAT").split()[1], "1")
        self.assertTrue(client.cmd("QUIT").startswith("+OK"))
        # A slow_auth user, answered synchronously (delay 0).
        client = server.raw()
        self.addCleanup(client.close)
        client.login("slowhand", "pw")
        self.assertTrue(client.cmd("QUIT").startswith("+OK"))

    def test_fail_stops_the_chain(self):
        server = self.slow_server(0)
        client = server.raw()
        self.addCleanup(client.close)
        # slowfile exists in both; slow_auth comes first and says FAIL for
        # passwd-file's password, and FAIL must not fall through.
        self.assertTrue(client.cmd("USER slowfile").startswith("+OK"))
        self.assertTrue(client.cmd("PASS file-pw").startswith("-ERR [AUTH]"))
        self.assertTrue(client.cmd("USER slowhand").startswith("+OK"))
        self.assertTrue(client.cmd("PASS wrong").startswith("-ERR [AUTH]"))
        client.login("slowfile", "pw")

    def test_unreachable_backend_is_sys_temp_and_stops_the_chain(self):
        for delay_ms in (0, 200):
            server = self.slow_server(delay_ms)
            # "slowdown..." users stand for a backend that is down: TEMPFAIL
            # must not become [AUTH], and passwd-file must not be asked.
            server.add_user("slowdown1", "file-pw")
            client = server.raw()
            self.addCleanup(client.close)
            self.assertTrue(client.cmd("USER slowdown1").startswith("+OK"))
            self.assertTrue(client.cmd("PASS file-pw").startswith("-ERR [SYS/TEMP]"))
            # The session goes on.
            client.login("alice", "alice-pw")
            self.assertTrue(client.cmd("QUIT").startswith("+OK"))


if __name__ == "__main__":
    run_tests()
