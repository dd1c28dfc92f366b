#!/usr/bin/env python3
"""popkit-passwd: the secrets it prints log in through popkitd's
passwd-file with poplib, -t checks a password, and wrong usage gets a
clear message and the documented exit status."""

import os
import poplib
import pty
import select
import subprocess
import time
import unittest

from popkit_harness import (POPKIT_PASSWD, PopkitTestCase, hash_password,
                            run_tests)

EX_USAGE = 64
SCHEMES = {
    # scheme name: how the printed secret starts
    "SCRAM-SHA-256": "{SCRAM-SHA-256}4096,",
    "CRYPT": "{CRYPT}$y$",
    "BLF-CRYPT": "{BLF-CRYPT}$2b$",
    "SHA512-CRYPT": "{SHA512-CRYPT}$6$",
    "SHA256-CRYPT": "{SHA256-CRYPT}$5$",
    "PLAIN": "{PLAIN}",
}
SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")


def passwd(*args, stdin=b""):
    """Runs popkit-passwd with stdin from a pipe (never a terminal)."""
    if isinstance(stdin, str):
        stdin = stdin.encode("utf-8")
    return subprocess.run([POPKIT_PASSWD] + list(args), input=stdin,
                          capture_output=True, timeout=60)


class PasswdTool(PopkitTestCase):
    def run_ok(self, *args, stdin=b""):
        result = passwd(*args, stdin=stdin)
        self.assert_exit(result, 0)
        return result.stdout.decode("utf-8")

    def assert_exit(self, result, code):
        err = result.stderr.decode("utf-8", "replace")
        self.assertEqual(result.returncode, code,
                         "popkit-passwd exited %d, expected %d; stderr: %s" %
                         (result.returncode, code, err))
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, err)

    def assert_refused(self, result, code, *needles):
        """Exit code, nothing on stdout, one message naming the problem."""
        self.assert_exit(result, code)
        self.assertEqual(result.stdout, b"")
        err = result.stderr.decode("utf-8", "replace")
        self.assertTrue(err.startswith("popkit-passwd: "), err)
        for needle in needles:
            self.assertIn(needle, err)

    # -- secrets that log in --

    def test_every_scheme_logs_in_with_user_pass(self):
        """One user per scheme, each line printed by -u, in one passwd-file."""
        server = self.make_server(start=False)
        users = {}
        lines = []
        for i, (scheme, start) in enumerate(SCHEMES.items()):
            user = "user-%s" % scheme.lower()
            # Spaces and UTF-8 for all; ':' only where a passwd-file line
            # can carry it (hashed schemes).
            password = "pa ss wörd %d" % i
            if scheme != "PLAIN":
                password += ":colon"
            out = self.run_ok("-s", scheme, "-u", user, stdin=password + "\n")
            self.assertTrue(out.endswith("\n") and out.count("\n") == 1, out)
            line = out[:-1]
            self.assertTrue(line.startswith("%s:%s" % (user, start)), line)
            if scheme != "PLAIN":
                self.assertNotIn(password, line)
            lines.append(line)
            users[user] = password
        # The default scheme, with the password given by -p.
        out = self.run_ok("-u", "o'brien", "-p", "dublin")
        self.assertTrue(out.startswith("o'brien:{SCRAM-SHA-256}"), out)
        lines.append(out[:-1])
        users["o'brien"] = "dublin"
        with open(server.users_path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        server.start()

        for user, password in users.items():
            with self.subTest(user=user):
                client = server.pop(user, password)
                self.assertEqual(client.stat(), (0, 0))
                client.quit()
                client = server.pop()
                client.user(user)
                with self.assertRaises(poplib.error_proto):
                    client.pass_(password + "x")
                client.quit()

    def test_cost_is_written_into_the_secret_and_still_logs_in(self):
        server = self.make_server(start=False)
        made = {
            "SCRAM-SHA-256": ("5000", "{SCRAM-SHA-256}5000,"),
            "CRYPT": ("3", "{CRYPT}$y$j7T$"),
            "BLF-CRYPT": ("4", "{BLF-CRYPT}$2b$04$"),
            "SHA512-CRYPT": ("1000", "{SHA512-CRYPT}$6$rounds=1000$"),
            "SHA256-CRYPT": ("2000", "{SHA256-CRYPT}$5$rounds=2000$"),
        }
        lines = []
        for scheme, (cost, start) in made.items():
            out = self.run_ok("-s", scheme, "-r", cost, "-u", scheme.lower(),
                              "-p", "pw " + cost)
            self.assertTrue(out.startswith(scheme.lower() + ":" + start), out)
            lines.append(out.strip("\n"))
        with open(server.users_path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        server.start()
        for scheme, (cost, _) in made.items():
            with self.subTest(scheme=scheme):
                server.pop(scheme.lower(), "pw " + cost).quit()

    def test_without_user_prints_the_secret_alone(self):
        out = self.run_ok("-s", "plain", stdin="secret\n")
        self.assertEqual(out, "{PLAIN}secret\n")
        # One line is read: what follows it is not part of the password.
        out = self.run_ok("-s", "PLAIN", stdin="first\nsecond\n")
        self.assertEqual(out, "{PLAIN}first\n")
        # A last line without a line break is a line too.
        out = self.run_ok("-s", "Plain", stdin="no newline")
        self.assertEqual(out, "{PLAIN}no newline\n")

    def test_two_runs_give_two_salts(self):
        first = self.run_ok("-p", "same")
        second = self.run_ok("-p", "same")
        self.assertNotEqual(first, second)
        self.assertEqual(self.check(first.strip(), "same").returncode, 0)
        self.assertEqual(self.check(second.strip(), "same").returncode, 0)

    # -- -t --

    def check(self, stored, password):
        return passwd("-t", stored, stdin=password + "\n")

    def test_check_answers_match_mismatch_unusable(self):
        for scheme in SCHEMES:
            with self.subTest(scheme=scheme):
                stored = self.run_ok("-s", scheme, "-p", "right one").strip()
                self.assert_exit(self.check(stored, "right one"), 0)
                self.assert_exit(self.check(stored, "right on"), 1)
                self.assert_exit(passwd("-t", stored, "-p", "right one"), 0)
        # Hashes made elsewhere (Python's crypt, i.e. libxcrypt) check too.
        for scheme in ("sha512", "bcrypt", "yescrypt"):
            with self.subTest(scheme=scheme):
                stored = hash_password("elsewhere", scheme)
                self.assert_exit(self.check(stored, "elsewhere"), 0)
                self.assert_exit(self.check("{CRYPT}" + stored, "elsewhere"), 0)
                self.assert_exit(self.check(stored, "Elsewhere"), 1)
        for stored in ("!", "*", "", "{SSHA}c2VjcmV0", "{SCRAM-SHA-256}garbage"):
            with self.subTest(stored=stored):
                result = self.check(stored, "anything")
                self.assert_exit(result, 2)
                self.assertIn(b"no password can match", result.stderr)

    # -- wrong usage and errors --

    def test_usage_errors_exit_64(self):
        cases = [
            (["-s", "SSHA"], "unknown scheme 'SSHA'"),
            (["-s"], "option -s needs an argument"),
            (["-r", "ten"], "-r ten"),
            (["-r", "-5"], "-r -5"),
            (["-x"], "unknown option -x"),
            (["--frobnicate"], "unknown option --frobnicate"),
            (["stray"], "unexpected argument 'stray'"),
            (["-t", "{PLAIN}a", "-s", "PLAIN"], "-t"),
            (["-u", "a:b"], "-u 'a:b'"),
            (["-u", ""], "-u ''"),
            (["-u", "# comment"], "-u '# comment'"),
        ]
        for args, needle in cases:
            with self.subTest(args=args):
                result = passwd("-p", "pw", *args)
                self.assert_refused(result, EX_USAGE, needle, "--help")

    def test_cost_out_of_range_exits_64(self):
        for scheme, cost in (("SCRAM-SHA-256", "4095"), ("CRYPT", "12"),
                             ("BLF-CRYPT", "3"), ("SHA512-CRYPT", "999"),
                             ("PLAIN", "1")):
            with self.subTest(scheme=scheme):
                result = passwd("-s", scheme, "-r", cost, "-p", "pw")
                self.assert_refused(result, EX_USAGE, scheme, "cost " + cost)

    def test_errors_exit_1(self):
        self.assert_refused(passwd("-s", "PLAIN", "-p", "a:b"), 1, "':'")
        self.assert_refused(passwd(stdin=b""), 1, "no password on standard input")
        self.assert_refused(passwd(stdin=b"\n"), 1, "empty")
        self.assert_refused(passwd("-s", "CRYPT", "-p", "x" * 600), 1, "at most 511")

    def test_help_lists_the_schemes_and_version(self):
        result = passwd("--help")
        self.assert_exit(result, 0)
        text = result.stdout.decode()
        for scheme in SCHEMES:
            self.assertIn(scheme, text)
        self.assertIn("SCRAM-SHA-256  the default", text)
        self.assertEqual(passwd("-h").stdout, result.stdout)
        version = passwd("--version")
        self.assert_exit(version, 0)
        self.assertRegex(version.stdout.decode(), r"^popkit-passwd \d+\.\d+\.\d+\n$")

    # -- the terminal --

    def on_terminal(self, args, answers):
        """Runs popkit-passwd on a pseudo-terminal, typing each answer when
        its prompt shows; returns everything the terminal showed and the
        exit status."""
        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.execv(POPKIT_PASSWD, [POPKIT_PASSWD] + args)
            finally:
                os._exit(127)
        shown = b""
        deadline = time.monotonic() + 30
        pending = list(answers)
        prompts_seen = 0
        while True:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # the child closed the terminal
                    data = b""
                if not data:
                    break
                shown += data
            if pending and shown.count(b"password: ") > prompts_seen:
                prompts_seen += 1
                os.write(fd, pending.pop(0))
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                raise AssertionError("popkit-passwd hangs on the terminal: %r" % shown)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        return shown.decode("utf-8", "replace"), os.waitstatus_to_exitcode(status)

    def test_terminal_asks_twice_without_echo(self):
        shown, code = self.on_terminal(["-s", "PLAIN", "-u", "tty"],
                                       [b"typed secret\n", b"typed secret\n"])
        self.assertEqual(code, 0, shown)
        self.assertIn("New password: ", shown)
        self.assertIn("Retype new password: ", shown)
        # The only place the password shows is the printed line itself.
        self.assertEqual(shown.count("typed secret"), 1, shown)
        self.assertIn("tty:{PLAIN}typed secret", shown)

    def test_terminal_retype_must_match(self):
        shown, code = self.on_terminal(["-s", "PLAIN"], [b"one\n", b"two\n"])
        self.assertEqual(code, 1, shown)
        self.assertIn("the passwords do not match", shown)
        self.assertNotIn("{PLAIN}", shown)


if __name__ == "__main__":
    run_tests()
