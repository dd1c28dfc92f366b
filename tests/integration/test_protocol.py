#!/usr/bin/env python3
"""POP3 conformance of popkitd (RFC 1939, RFC 2449 CAPA, RFC 2449/3206
response codes), driven with poplib and with raw sockets where the exact
bytes matter."""

import hashlib
import itertools
import re
import shutil
import time

from popkit_harness import (ConnectionClosed, PopkitTestCase,
                            SharedServerTestCase, crlf_form, expected_top,
                            maildir_only, run_tests, wire_body)

# Spaces in a password are part of it (PASS takes the rest of the line).
PASSWORD = "s3cret pass word"

# The mailbox every pool user starts with. Each message tests one rule of
# the encoder; numbering follows this order.
MESSAGES = [
    b"From: a@test.local\nTo: u@test.local\nSubject: one\n\nbody one\nline 2\nline 3\n",
    b"From: a@test.local\nSubject: dots\n\n.\n..\n.x\nafter\n",
    b"From: a@test.local\nSubject: no final newline\n\nfirst\nlast without newline",
    b"From: a@test.local\nSubject: bare cr\n\nbare\rcr stays\r\nand crlf\n",
    b"From: a@test.local\nSubject: header only, no body\n",
]
COUNT = len(MESSAGES)
POOL_SIZE = 140
LONG_PASSWORD = "p" * 4000 + "q" * 4000
BAD_NUMBERS = ["0", "-1", "abc", "1x", "99999999999999999999999",
               "18446744073709551617", "4294967297", str(COUNT + 1)]


def parse_ok(reply: str) -> str:
    if not reply.startswith("+OK"):
        raise AssertionError("expected +OK, got %r" % reply)
    return reply


class Conformance(SharedServerTestCase):
    """One popkitd; every test logs in as its own pool user so no test
    sees another's deletions or locks."""

    _pool = itertools.count(1)

    @classmethod
    def populate(cls, server):
        cls.names = {}
        for i in range(1, POOL_SIZE + 1):
            user = "user%03d" % i
            server.add_user(user, PASSWORD)
            cls.names[user] = [server.add_message(user, raw) for raw in MESSAGES]
        server.add_user("sha512", "pw-sha512", "sha512")
        server.add_user("sha256", "pw-sha256", "sha256")
        server.add_user("yescrypt", "pw-yescrypt", "yescrypt")
        server.add_user("bcrypt", "pw-bcrypt", "bcrypt")
        server.add_user("longpw", LONG_PASSWORD)
        # passwd-file ends the hash at the next ':', so a password with a
        # colon can only be stored hashed.
        server.add_user("colon", "pa:ss w:rd", "sha512")

    def fresh_user(self) -> str:
        n = next(self._pool)
        self.assertLessEqual(n, POOL_SIZE, "raise POOL_SIZE")
        return "user%03d" % n

    def logged_in(self):
        user = self.fresh_user()
        client = self.raw()
        client.login(user, PASSWORD)
        return client, user

    # -- greeting and CAPA --

    def test_greeting(self):
        client = self.raw()
        self.assertEqual(client.greeting, "+OK popkit ready.")

    def check_capa(self, client, expect_user: bool):
        parse_ok(client.cmd("CAPA"))
        lines = [l.decode() for l in client.multiline()]
        for capability in ("TOP", "UIDL", "PIPELINING", "RESP-CODES",
                           "AUTH-RESP-CODE", "EXPIRE NEVER"):
            self.assertIn(capability, lines)
        self.assertTrue(any(l.startswith("IMPLEMENTATION popkit") for l in lines),
                        lines)
        if expect_user:
            self.assertIn("USER", lines)
        return lines

    def test_capa_before_login(self):
        self.check_capa(self.raw(), expect_user=True)

    def test_capa_after_login(self):
        client, _ = self.logged_in()
        self.check_capa(client, expect_user=False)

    # -- authorization --

    def test_login_with_each_hash_scheme(self):
        for user in ("sha512", "sha256", "yescrypt", "bcrypt"):
            with self.subTest(user=user):
                client = self.raw()
                client.login(user, "pw-" + user)
                self.assertEqual(client.cmd("STAT"), "+OK 0 0")
                parse_ok(client.cmd("QUIT"))

    def test_wrong_password_gets_auth_code_and_session_stays(self):
        user = self.fresh_user()
        client = self.raw()
        parse_ok(client.cmd("USER " + user))
        reply = client.cmd("PASS wrong")
        self.assertTrue(reply.startswith("-ERR [AUTH]"), reply)
        # Still in AUTHORIZATION: a transaction command is refused, a new
        # USER/PASS with the right password works on the same connection.
        self.assertTrue(client.cmd("STAT").startswith("-ERR"))
        client.login(user, PASSWORD)
        self.assertEqual(client.cmd("STAT").split()[1], str(COUNT))

    def test_password_with_colon_and_spaces(self):
        client = self.raw()
        client.login("colon", "pa:ss w:rd")
        self.assertEqual(client.cmd("STAT"), "+OK 0 0")

    def test_wrong_crypt_password(self):
        client = self.raw()
        parse_ok(client.cmd("USER yescrypt"))
        self.assertTrue(client.cmd("PASS pw-sha512").startswith("-ERR [AUTH]"))

    def test_unknown_user_cannot_log_in(self):
        client = self.raw()
        reply = client.cmd("USER nobody-here")
        if reply.startswith("+OK"):
            reply = client.cmd("PASS " + PASSWORD)
        self.assertTrue(reply.startswith("-ERR [AUTH]"), reply)

    def test_user_and_pass_need_an_argument(self):
        user = self.fresh_user()
        client = self.raw()
        self.assertTrue(client.cmd("USER").startswith("-ERR"))
        parse_ok(client.cmd("USER " + user))
        self.assertTrue(client.cmd("PASS").startswith("-ERR"))
        client.login(user, PASSWORD)

    def test_pass_without_user(self):
        client = self.raw()
        self.assertTrue(client.cmd("PASS " + PASSWORD).startswith("-ERR"))

    def test_transaction_commands_refused_before_login(self):
        client = self.raw()
        for command in ("STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "UIDL",
                        "TOP 1 0", "RSET", "NOOP"):
            with self.subTest(command=command):
                self.assertTrue(client.cmd(command).startswith("-ERR"))

    def test_user_and_pass_refused_after_login(self):
        client, user = self.logged_in()
        self.assertTrue(client.cmd("USER " + user).startswith("-ERR"))
        self.assertTrue(client.cmd("PASS " + PASSWORD).startswith("-ERR"))
        parse_ok(client.cmd("NOOP"))

    def test_quit_in_authorization(self):
        client = self.raw()
        parse_ok(client.cmd("QUIT"))
        self.assertEqual(client.wait_closed(5), b"")

    def test_unknown_command(self):
        client, _ = self.logged_in()
        self.assertTrue(client.cmd("FROBNICATE 1").startswith("-ERR"))
        self.assertTrue(client.cmd("").startswith("-ERR"))
        parse_ok(client.cmd("NOOP"))

    def test_commands_are_case_insensitive(self):
        user = self.fresh_user()
        client = self.raw()
        parse_ok(client.cmd("user " + user))
        parse_ok(client.cmd("pAsS " + PASSWORD))
        self.assertEqual(client.cmd("stat"),
                         "+OK %d %d" % (COUNT, sum(len(crlf_form(m)) for m in MESSAGES)))
        self.assertEqual(client.cmd("LiSt 1"), "+OK 1 %d" % len(crlf_form(MESSAGES[0])))
        parse_ok(client.cmd("uidl 1"))
        parse_ok(client.cmd("retr 1"))
        self.assertEqual(client.multiline_wire(), wire_body(MESSAGES[0]))
        parse_ok(client.cmd("top 1 0"))
        client.multiline_wire()
        parse_ok(client.cmd("noop"))
        parse_ok(client.cmd("capa"))
        client.multiline()
        parse_ok(client.cmd("quit"))

    # -- STAT, LIST, UIDL --

    def test_stat(self):
        client, _ = self.logged_in()
        total = sum(len(crlf_form(m)) for m in MESSAGES)
        self.assertEqual(client.cmd("STAT"), "+OK %d %d" % (COUNT, total))

    def test_list_all(self):
        client, _ = self.logged_in()
        parse_ok(client.cmd("LIST"))
        expected = [b"%d %d" % (i + 1, len(crlf_form(m)))
                    for i, m in enumerate(MESSAGES)]
        self.assertEqual(client.multiline(), expected)

    def test_list_one(self):
        client, _ = self.logged_in()
        for i, message in enumerate(MESSAGES, 1):
            self.assertEqual(client.cmd("LIST %d" % i),
                             "+OK %d %d" % (i, len(crlf_form(message))))

    def test_uidl_all_and_one(self):
        client, user = self.logged_in()
        parse_ok(client.cmd("UIDL"))
        lines = client.multiline()
        self.assertEqual(len(lines), COUNT)
        uids = []
        for i, line in enumerate(lines, 1):
            number, uid = line.decode("ascii").split(" ")
            self.assertEqual(number, str(i))
            self.assertRegex(uid, r"^[\x21-\x7e]{1,70}$")
            self.assertEqual(client.cmd("UIDL %d" % i), "+OK %d %s" % (i, uid))
            uids.append(uid)
        self.assertEqual(len(set(uids)), COUNT, "unique ids must be unique")
        # The maildir module derives the unique id from the file's base
        # name, which is what makes ids survive new -> cur renames.
        self.assertEqual(uids, self.names[user])

    # -- RETR and TOP --

    def test_retr_exact_bytes(self):
        client, _ = self.logged_in()
        for i, message in enumerate(MESSAGES, 1):
            with self.subTest(message=i):
                reply = client.cmd("RETR %d" % i)
                match = re.fullmatch(r"\+OK (\d+) octets", reply)
                self.assertIsNotNone(match, reply)
                self.assertEqual(int(match.group(1)), len(crlf_form(message)))
                self.assertEqual(client.multiline_wire(), wire_body(message))

    def test_retr_with_poplib(self):
        user = self.fresh_user()
        pop = self.server.pop(user, PASSWORD)
        try:
            for i, message in enumerate(MESSAGES, 1):
                _, lines, octets = pop.retr(i)
                form = crlf_form(message)
                self.assertEqual(b"".join(l + b"\r\n" for l in lines), form)
        finally:
            pop.quit()

    def test_top_zero_lines_is_header_and_blank_line(self):
        client, _ = self.logged_in()
        parse_ok(client.cmd("TOP 1 0"))
        self.assertEqual(
            client.multiline_wire(),
            b"From: a@test.local\r\nTo: u@test.local\r\nSubject: one\r\n\r\n.\r\n")

    def test_top_n_lines(self):
        client, _ = self.logged_in()
        for i, message in enumerate(MESSAGES, 1):
            for n in (1, 2, 3):
                with self.subTest(message=i, lines=n):
                    parse_ok(client.cmd("TOP %d %d" % (i, n)))
                    self.assertEqual(client.multiline_wire(),
                                     wire_body(expected_top(message, n)))

    def test_top_dot_stuffs_body_lines(self):
        client, _ = self.logged_in()
        parse_ok(client.cmd("TOP 2 3"))
        self.assertEqual(client.multiline_wire(),
                         b"From: a@test.local\r\nSubject: dots\r\n\r\n"
                         b"..\r\n...\r\n..x\r\n.\r\n")

    def test_top_beyond_body_returns_whole_message(self):
        client, _ = self.logged_in()
        for i, message in enumerate(MESSAGES, 1):
            with self.subTest(message=i):
                parse_ok(client.cmd("TOP %d 1000" % i))
                self.assertEqual(client.multiline_wire(), wire_body(message))

    def test_top_of_message_without_body(self):
        client, _ = self.logged_in()
        parse_ok(client.cmd("TOP 5 0"))
        self.assertEqual(client.multiline_wire(), wire_body(MESSAGES[4]))

    # -- DELE, RSET, NOOP --

    def test_dele_marks_and_hides_the_message(self):
        client, user = self.logged_in()
        sizes = [len(crlf_form(m)) for m in MESSAGES]
        parse_ok(client.cmd("DELE 2"))
        self.assertEqual(client.cmd("STAT"),
                         "+OK %d %d" % (COUNT - 1, sum(sizes) - sizes[1]))
        for command in ("DELE 2", "RETR 2", "LIST 2", "TOP 2 0", "UIDL 2"):
            with self.subTest(command=command):
                self.assertTrue(client.cmd(command).startswith("-ERR"))
        parse_ok(client.cmd("LIST"))
        self.assertEqual([l.split()[0] for l in client.multiline()],
                         [b"1", b"3", b"4", b"5"])
        parse_ok(client.cmd("UIDL"))
        self.assertEqual([l.split()[0] for l in client.multiline()],
                         [b"1", b"3", b"4", b"5"])
        # Other messages keep their numbers.
        self.assertEqual(client.cmd("LIST 3"), "+OK 3 %d" % sizes[2])

    def test_rset_unmarks(self):
        client, user = self.logged_in()
        parse_ok(client.cmd("DELE 1"))
        parse_ok(client.cmd("DELE 3"))
        parse_ok(client.cmd("RSET"))
        total = sum(len(crlf_form(m)) for m in MESSAGES)
        self.assertEqual(client.cmd("STAT"), "+OK %d %d" % (COUNT, total))
        parse_ok(client.cmd("RETR 1"))
        self.assertEqual(client.multiline_wire(), wire_body(MESSAGES[0]))
        parse_ok(client.cmd("QUIT"))
        self.assertEqual(client.wait_closed(5), b"")
        self.assertEqual(self.server.message_files(user), sorted(self.names[user]))

    def test_noop(self):
        client, _ = self.logged_in()
        parse_ok(client.cmd("NOOP"))

    def test_quit_in_transaction_commits_and_closes(self):
        client, user = self.logged_in()
        parse_ok(client.cmd("DELE 4"))
        parse_ok(client.cmd("QUIT"))
        self.assertEqual(client.wait_closed(5), b"")
        expected = sorted(n for i, n in enumerate(self.names[user]) if i != 3)
        self.assertEqual(self.server.message_files(user), expected)

    # -- long lines, error limits, pipelining --

    def test_too_long_line_is_discarded_and_session_continues(self):
        client = self.raw()
        client.send(b"USER " + b"a" * 10000 + b"\r\nCAPA\r\n")
        self.assertTrue(client.line().startswith("-ERR"))
        # The rest of the long line must not be taken for a command: the
        # next reply is CAPA's.
        parse_ok(client.line())
        self.assertIn(b"UIDL", client.multiline())

    def test_too_long_line_in_pieces(self):
        client, _ = self.logged_in()
        client.send(b"NOOP " + b"x" * 6000)
        time.sleep(0.2)
        client.send(b"y" * 6000)
        time.sleep(0.2)
        client.send(b"z" * 100 + b"\r\nNOOP\r\n")
        self.assertTrue(client.line().startswith("-ERR"))
        parse_ok(client.line())
        parse_ok(client.cmd("STAT"))

    def test_long_line_under_the_limit_is_a_command(self):
        # "PASS " + 8000 characters + CRLF is under max_line_bytes (8192),
        # so it must be read as one ordinary command.
        client = self.raw()
        parse_ok(client.cmd("USER longpw"))
        parse_ok(client.cmd("PASS " + LONG_PASSWORD))
        parse_ok(client.cmd("STAT"))

    def test_too_many_bad_commands_close_the_session(self):
        client = self.raw()
        errors = 0
        try:
            for _ in range(20):
                reply = client.cmd("BOGUS")
                self.assertTrue(reply.startswith("-ERR"), reply)
                errors += 1
        except (ConnectionClosed, ConnectionResetError, BrokenPipeError):
            pass
        self.assertIn(errors, (10, 11),
                      "closed after %d -ERR, max_bad_commands is 10" % errors)

    def test_bad_command_count_resets_after_a_good_one(self):
        client, _ = self.logged_in()
        for _ in range(3):
            for _ in range(9):
                self.assertTrue(client.cmd("BOGUS").startswith("-ERR"))
            parse_ok(client.cmd("NOOP"))
        parse_ok(client.cmd("STAT"))

    def test_pipelined_commands_answered_in_order(self):
        user = self.fresh_user()
        client = self.raw()
        client.send("USER %s\r\nPASS %s\r\nSTAT\r\nLIST\r\nUIDL 1\r\nRETR 2\r\n"
                    "TOP 1 0\r\nBOGUS\r\nNOOP\r\nQUIT\r\n" % (user, PASSWORD))
        parse_ok(client.line())
        parse_ok(client.line())
        self.assertEqual(client.line().split()[1], str(COUNT))
        parse_ok(client.line())
        self.assertEqual(len(client.multiline()), COUNT)
        self.assertEqual(client.line(), "+OK 1 %s" % self.names[user][0])
        parse_ok(client.line())
        self.assertEqual(client.multiline_wire(), wire_body(MESSAGES[1]))
        parse_ok(client.line())
        self.assertEqual(client.multiline_wire(), wire_body(expected_top(MESSAGES[0], 0)))
        self.assertTrue(client.line().startswith("-ERR"))
        parse_ok(client.line())
        parse_ok(client.line())
        self.assertEqual(client.wait_closed(5), b"")

    def test_many_pipelined_commands_in_one_write(self):
        client, _ = self.logged_in()
        client.send(b"LIST 1\r\n" * 300 + b"RETR 3\r\n" * 50)
        for _ in range(300):
            self.assertEqual(client.line(), "+OK 1 %d" % len(crlf_form(MESSAGES[0])))
        for _ in range(50):
            parse_ok(client.line())
            self.assertEqual(client.multiline_wire(), wire_body(MESSAGES[2]))


def _make_malformed_test(command_template: str):
    def test(self):
        client, user = self.logged_in()
        command = command_template
        reply = client.cmd(command)
        self.assertTrue(reply.startswith("-ERR"), "%s -> %s" % (command, reply))
        # The session survives and nothing was marked.
        parse_ok(client.cmd("NOOP"))
        self.assertEqual(client.cmd("STAT").split()[1], str(COUNT))
        parse_ok(client.cmd("QUIT"))
        client.wait_closed(5)
        self.assertEqual(self.server.message_files(user), sorted(self.names[user]))
    return test


def _test_name(command: str) -> str:
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", command.replace("-", "minus")).strip("_")
    return "test_malformed_" + (slug or "empty").lower()


MALFORMED = []
for _verb in ("RETR", "LIST", "DELE", "UIDL"):
    MALFORMED += ["%s %s" % (_verb, n) for n in BAD_NUMBERS]
    MALFORMED.append("%s 1 2" % _verb)
MALFORMED += ["TOP %s 0" % n for n in BAD_NUMBERS]
MALFORMED += ["RETR", "DELE", "TOP", "TOP 1", "TOP 1 -1", "TOP 1 abc",
              "TOP 1 1x", "TOP 1 2 3", "STAT 1", "NOOP 1", "RSET 1"]

for _command in MALFORMED:
    setattr(Conformance, _test_name(_command), _make_malformed_test(_command))


class Timeouts(PopkitTestCase):
    def test_login_timeout(self):
        server = self.make_server({"limits": {"login_timeout_s": 1}})
        client = server.raw()
        self.addCleanup(client.close)
        started = time.monotonic()
        rest = client.wait_closed(8)
        self.assertTrue(rest.startswith(b"-ERR"), rest)
        self.assertGreaterEqual(time.monotonic() - started, 0.8)

    def check_idle_timeout(self, limits):
        server = self.make_server({"limits": limits})
        server.add_user("idle", PASSWORD)
        name = server.add_message("idle", b"Subject: x\n\nbody\n")
        client = server.raw()
        self.addCleanup(client.close)
        client.login("idle", PASSWORD)
        parse_ok(client.cmd("DELE 1"))
        rest = client.wait_closed(8)
        self.assertTrue(rest.startswith(b"-ERR"), rest)
        # A timed-out session did not QUIT: its deletion is not applied.
        self.assertEqual(server.message_files("idle"), [name])

    def test_idle_timeout(self):
        self.check_idle_timeout({"idle_timeout_s": 1})

    def test_idle_timeout_equal_to_login_timeout(self):
        self.check_idle_timeout({"idle_timeout_s": 1, "login_timeout_s": 1})


class ServerOptions(PopkitTestCase):
    def test_apop(self):
        server = self.make_server({"apop": True})
        server.add_user("apopuser", "apop secret")
        server.add_message("apopuser", b"Subject: apop\n\nhi\n")
        client = server.raw()
        self.addCleanup(client.close)
        match = re.fullmatch(r"\+OK popkit ready\. (<[^<>@ ]+@[^<> ]+>)",
                             client.greeting)
        self.assertIsNotNone(match, client.greeting)
        timestamp = match.group(1)
        wrong = hashlib.md5((timestamp + "nope").encode()).hexdigest()
        self.assertTrue(client.cmd("APOP apopuser " + wrong).startswith("-ERR [AUTH]"))
        digest = hashlib.md5((timestamp + "apop secret").encode()).hexdigest()
        parse_ok(client.cmd("APOP apopuser " + digest))
        self.assertEqual(client.cmd("STAT"), "+OK 1 %d" % len(b"Subject: apop\r\n\r\nhi\r\n"))

    def test_apop_disabled_by_default(self):
        server = self.make_server()
        server.add_user("apopuser", "apop secret")
        client = server.raw()
        self.addCleanup(client.close)
        self.assertEqual(client.greeting, "+OK popkit ready.")
        digest = hashlib.md5(b"<x@y>apop secret").hexdigest()
        self.assertTrue(client.cmd("APOP apopuser " + digest).startswith("-ERR"))

    def test_tls_only_refuses_plaintext_on_loopback(self):
        server = self.make_server({"plaintext_auth": "tls-only"})
        server.add_user("alice", PASSWORD)
        client = server.raw()
        self.addCleanup(client.close)
        parse_ok(client.cmd("CAPA"))
        self.assertNotIn(b"USER", client.multiline())
        reply = client.cmd("USER alice")
        if reply.startswith("+OK"):
            reply = client.cmd("PASS " + PASSWORD)
        self.assertTrue(reply.startswith("-ERR"), reply)

    @maildir_only("removes the directory that holds the maildirs")
    def test_missing_mail_root_gives_sys_perm(self):
        server = self.make_server()
        server.add_user("alice", PASSWORD)
        shutil.rmtree(server.mail_root)
        client = server.raw()
        self.addCleanup(client.close)
        parse_ok(client.cmd("USER alice"))
        reply = client.cmd("PASS " + PASSWORD)
        self.assertTrue(reply.startswith("-ERR [SYS/PERM]"), reply)


if __name__ == "__main__":
    run_tests()
