#!/usr/bin/env python3
"""popkit-deliver: exit codes (sysexits.h) and what a POP3 client sees of
delivered mail."""

import os
import resource
import signal
import subprocess

from popkit_harness import (MODULES_DIR, POPKIT_DELIVER, PopkitTestCase,
                            crlf_form, run_tests, special_messages, wire_body)

PASSWORD = "pw"
EX_OK, EX_DATAERR, EX_NOUSER, EX_TEMPFAIL = 0, 65, 67, 75


class Deliver(PopkitTestCase):
    def setUp(self):
        self.server = self.make_server(start=False)
        self.server.add_user("alice", PASSWORD)
        self.server.add_user("o'brien", PASSWORD)
        self.server.write_config()

    def deliver(self, user: str, message: bytes) -> subprocess.CompletedProcess:
        return subprocess.run(
            [POPKIT_DELIVER, "-c", self.server.config_path, "--modules-dir",
             MODULES_DIR, user], input=message, capture_output=True, timeout=60)

    def assert_exit(self, result, code):
        self.assertEqual(result.returncode, code,
                         "popkit-deliver exited %d, expected %d; stderr: %s" % (
                             result.returncode, code, result.stderr.decode("utf-8", "replace")))
        for marker in ("AddressSanitizer", "runtime error:"):
            self.assertNotIn(marker, result.stderr.decode("utf-8", "replace"))

    def test_delivered_mail_is_retrieved_byte_for_byte(self):
        messages = [raw for label, raw in special_messages()]
        for raw in messages:
            self.assert_exit(self.deliver("alice", raw), EX_OK)
        self.assertEqual(len(self.server.message_files("alice")), len(messages))
        self.server.start()
        client = self.server.raw(timeout=60)
        self.addCleanup(client.close)
        client.login("alice", PASSWORD)
        self.assertEqual(client.cmd("STAT"), "+OK %d %d" % (
            len(messages), sum(len(crlf_form(m)) for m in messages)))
        # Deliveries in one second may share a timestamp, so match by
        # content rather than by position.
        got = []
        for i in range(1, len(messages) + 1):
            self.assertTrue(client.cmd("RETR %d" % i).startswith("+OK"))
            got.append(client.multiline_wire())
        self.assertEqual(sorted(got), sorted(wire_body(m) for m in messages))

    def test_unknown_user_is_67(self):
        result = self.deliver("nobody", b"Subject: x\n\nhello\n")
        self.assert_exit(result, EX_NOUSER)
        self.assertFalse(os.path.exists(self.server.maildir("nobody")))

    def test_empty_message_is_65(self):
        self.assert_exit(self.deliver("alice", b""), EX_DATAERR)
        self.assertEqual(self.server.message_files("alice"), [])

    def test_deliver_to_obrien(self):
        self.assert_exit(self.deliver("o'brien", b"Subject: hi\n\nfor o'brien\n"), EX_OK)
        self.assertEqual(len(self.server.message_files("o'brien")), 1)
        self.assertEqual(self.server.message_files("alice"), [])

    def test_new_mail_shows_at_next_login_not_in_open_session(self):
        first = b"Subject: first\n\nalready there\n"
        self.server.add_message("alice", first)
        self.server.start()
        session = self.server.raw()
        self.addCleanup(session.close)
        session.login("alice", PASSWORD)
        self.assertEqual(session.cmd("STAT"), "+OK 1 %d" % len(crlf_form(first)))
        # Delivery does not wait for the POP3 lock...
        second = b"Subject: second\n\narrived during the session\n"
        self.assert_exit(self.deliver("alice", second), EX_OK)
        # ...but the open session keeps the snapshot it took at login.
        self.assertEqual(session.cmd("STAT"), "+OK 1 %d" % len(crlf_form(first)))
        self.assertTrue(session.cmd("LIST 2").startswith("-ERR"))
        self.assertTrue(session.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(session.cmd("QUIT").startswith("+OK"))
        session.wait_closed(5)
        later = self.server.raw()
        self.addCleanup(later.close)
        later.login("alice", PASSWORD)
        self.assertEqual(later.cmd("STAT"), "+OK 1 %d" % len(crlf_form(second)))
        self.assertTrue(later.cmd("RETR 1").startswith("+OK"))
        self.assertEqual(later.multiline_wire(), wire_body(second))

    def test_write_failure_is_75_and_leaves_nothing(self):
        # A file size limit makes the write into tmp/ fail with EFBIG, as a
        # full disk would with ENOSPC: the MTA must retry later (75), and
        # no half-written message may stay behind.
        def limit_file_size():
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

        self.server.make_maildir(self.server.maildir("alice"))
        result = subprocess.run(
            [POPKIT_DELIVER, "-c", self.server.config_path, "--modules-dir",
             MODULES_DIR, "alice"], input=b"Subject: big\n\n" + b"x" * 100000 + b"\n",
            capture_output=True, timeout=60, preexec_fn=limit_file_size)
        self.assert_exit(result, EX_TEMPFAIL)
        self.assertEqual(self.server.message_files("alice"), [])
        self.assertEqual(os.listdir(os.path.join(self.server.maildir("alice"), "tmp")), [])

    def test_missing_config_fails(self):
        result = subprocess.run(
            [POPKIT_DELIVER, "-c", os.path.join(self.server.dir, "nope.json"),
             "--modules-dir", MODULES_DIR, "alice"],
            input=b"Subject: x\n\nx\n", capture_output=True, timeout=60)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("nope.json", result.stderr.decode("utf-8", "replace"))


if __name__ == "__main__":
    run_tests()
