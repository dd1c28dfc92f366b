#!/usr/bin/env python3
"""Real POP3 clients download every message and get exactly the stored
bytes: Python's poplib, curl, fetchmail and mpop.

The mailbox holds the messages that break naive servers (lines ".", "..",
".x", no final newline, CRLF already, 8-bit UTF-8, 6 MB). The bytes each
client must end up with are computed here from what was stored: the CRLF
form for poplib and curl, and the LF form (what a maildir or an MDA gets
from fetchmail and mpop) for the other two.
"""

import os
import re
import shutil
import stat
import subprocess
import unittest

from popkit_harness import (PopkitTestCase, crlf_form, run_tests,
                            special_messages)

PASSWORD = "client pw"
CLIENT_TIMEOUT_S = 120


def lf_form(raw: bytes) -> bytes:
    """What a client that stores LF line ends keeps: the CRLF form with
    every CRLF turned back into LF."""
    return crlf_form(raw).replace(b"\r\n", b"\n")


def strip_received(message: bytes) -> bytes:
    """Remove the Received: header fetchmail prepends (with its folded
    continuation lines) from the top of a message."""
    lines = message.split(b"\n")
    if not lines[0].lower().startswith(b"received:"):
        raise AssertionError("no Received: header at the top: %r" % lines[0][:80])
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\n".join(lines[i:])


class Clients(PopkitTestCase):
    def setUp(self):
        self.messages = special_messages()
        self.server = self.make_server(start=False)
        self.server.add_user("alice", PASSWORD)
        for _, raw in self.messages:
            self.server.add_message("alice", raw)
        self.server.start()
        self.work = os.path.join(self.server.dir, "client")
        os.mkdir(self.work)

    def run_client(self, argv, **kwargs):
        env = dict(os.environ, HOME=self.work, XDG_CONFIG_HOME=self.work,
                   FETCHMAILHOME=self.work)
        result = subprocess.run(argv, capture_output=True, timeout=CLIENT_TIMEOUT_S,
                                env=env, cwd=self.work, **kwargs)
        if result.returncode != 0:
            self.fail("%s exited with %d\nstdout: %s\nstderr: %s" % (
                argv[0], result.returncode, result.stdout[-4000:].decode("utf-8", "replace"),
                result.stderr[-4000:].decode("utf-8", "replace")))
        return result

    def assert_mailbox_untouched(self):
        self.assertEqual(len(self.server.message_files("alice")), len(self.messages))

    # -- poplib --

    def test_poplib_downloads_every_message(self):
        pop = self.server.pop("alice", PASSWORD, timeout=60)
        try:
            count, size = pop.stat()
            self.assertEqual(count, len(self.messages))
            self.assertEqual(size, sum(len(crlf_form(r)) for _, r in self.messages))
            _, listing, _ = pop.list()
            self.assertEqual(listing, [b"%d %d" % (i, len(crlf_form(r)))
                                       for i, (_, r) in enumerate(self.messages, 1)])
            for i, (label, raw) in enumerate(self.messages, 1):
                with self.subTest(message=label):
                    reply, lines, octets = pop.retr(i)
                    self.assertEqual(reply, b"+OK %d octets" % len(crlf_form(raw)))
                    got = b"".join(line + b"\r\n" for line in lines)
                    self.assertEqual(got, crlf_form(raw))
        finally:
            pop.quit()
        self.assert_mailbox_untouched()

    # -- curl --

    def test_curl_downloads_every_message(self):
        base = "pop3://alice:%s@127.0.0.1:%d" % (PASSWORD.replace(" ", "%20"),
                                                self.server.port)
        for i, (label, raw) in enumerate(self.messages, 1):
            with self.subTest(message=label):
                result = self.run_client(["curl", "-s", "-S", "%s/%d" % (base, i)])
                self.assertEqual(result.stdout, crlf_form(raw))
        self.assert_mailbox_untouched()

    def test_curl_lists_the_mailbox(self):
        base = "pop3://alice:%s@127.0.0.1:%d/" % (PASSWORD.replace(" ", "%20"),
                                                 self.server.port)
        result = self.run_client(["curl", "-s", "-S", base])
        expected = b"".join(b"%d %d\r\n" % (i, len(crlf_form(r)))
                            for i, (_, r) in enumerate(self.messages, 1))
        self.assertEqual(result.stdout, expected)

    def test_curl_wrong_password_fails(self):
        url = "pop3://alice:wrong@127.0.0.1:%d/1" % self.server.port
        result = subprocess.run(["curl", "-s", url], capture_output=True,
                                timeout=CLIENT_TIMEOUT_S)
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stdout, b"")

    # -- fetchmail --

    def test_fetchmail_downloads_every_message(self):
        if shutil.which("fetchmail") is None:
            self.skipTest("fetchmail is not installed")
        out = os.path.join(self.work, "fetched")
        os.mkdir(out)
        # fetchmail hands each message to the MDA on stdin, one process per
        # message, in mailbox order: number them as they come.
        mda = os.path.join(self.work, "save-message")
        with open(mda, "w") as f:
            f.write('#!/bin/sh\nn=$(ls "%s" | wc -l)\n'
                    'cat > "%s/$(printf %%04d "$n")"\n' % (out, out))
        os.chmod(mda, 0o700)
        rcfile = os.path.join(self.work, "fetchmailrc")
        with open(rcfile, "w") as f:
            f.write(
                "set no syslog\n"
                "set no bouncemail\n"
                'poll 127.0.0.1 protocol pop3 port %d timeout 60\n'
                '  user "alice" there with password "%s" is "alice" here\n'
                "  options keep fetchall no rewrite sslproto ''\n"
                '  mda "%s"\n' % (self.server.port, PASSWORD, mda))
        os.chmod(rcfile, stat.S_IRUSR | stat.S_IWUSR)
        self.run_client(["fetchmail", "--fetchmailrc", rcfile, "--nodetach",
                         "--idfile", os.path.join(self.work, "fetchids"),
                         "--pidfile", os.path.join(self.work, "fetchmail.pid")])
        files = sorted(os.listdir(out))
        self.assertEqual(len(files), len(self.messages))
        for name, (label, raw) in zip(files, self.messages):
            with self.subTest(message=label):
                with open(os.path.join(out, name), "rb") as f:
                    got = f.read()
                self.assertEqual(strip_received(got), lf_form(raw))
        self.assert_mailbox_untouched()

    # -- mpop --

    def test_mpop_downloads_every_message(self):
        if shutil.which("mpop") is None:
            self.skipTest("mpop is not installed")
        maildir = self.server.make_maildir(os.path.join(self.work, "Maildir"))
        self.run_client([
            "mpop", "--host=127.0.0.1", "--port=%d" % self.server.port,
            "--tls=off", "--auth=user", "--user=alice",
            "--passwordeval=printf '%%s' '%s'" % PASSWORD,
            "--delivery=maildir,%s" % maildir,
            "--received-header=off", "--keep=on", "--only-new=off",
            "--uidls-file=%s" % os.path.join(self.work, "uidls"),
        ])
        delivered = []
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(maildir, sub)):
                with open(os.path.join(maildir, sub, name), "rb") as f:
                    delivered.append(f.read())
        self.assertEqual(len(delivered), len(self.messages))
        # mpop names maildir files by time and counter; compare as a
        # multiset (every message is distinct).
        expected = sorted(lf_form(raw) for _, raw in self.messages)
        self.assertEqual(sorted(delivered), expected)
        self.assert_mailbox_untouched()


if __name__ == "__main__":
    run_tests()
