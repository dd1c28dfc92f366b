#!/usr/bin/env python3
"""Sessions against the real maildir: concurrency across workers, what
deletion commits and what it does not, locking, unique-id stability, user
names that must be contained, IPv6."""

import os
import threading
import time
import unittest

from popkit_harness import (PopkitTestCase, big_message, crlf_form,
                            ipv6_loopback_available, maildir_only, run_tests,
                            wire_body)

PASSWORD = "pw"


def message_for(user: str, i: int) -> bytes:
    return ("From: sender@test.local\nTo: %s@test.local\nSubject: %s #%d\n\n"
            "Hello %s, this is message %d.\n.\n..dots\n" % (user, user, i, user, i)
            ).encode()


class ConcurrentSessions(PopkitTestCase):
    USERS = 200

    def test_200_sessions_at_once_across_2_workers(self):
        server = self.make_server({"workers": 2}, start=False)
        expected = {}
        for n in range(self.USERS):
            user = "c%03d" % n
            server.add_user(user, PASSWORD)
            raws = [message_for(user, i) for i in range(1 + n % 3)]
            names = [server.add_message(user, raw) for raw in raws]
            expected[user] = (raws, names)
        server.start()

        # Every session logs in, then waits at the barrier until all 200
        # are logged in at the same time, then checks its mailbox, then
        # waits again so none QUITs before all have read.
        logged_in = threading.Barrier(self.USERS, timeout=90)
        checked = threading.Barrier(self.USERS, timeout=90)
        failures = []

        def session(user):
            client = None
            try:
                raws, names = expected[user]
                client = server.raw(timeout=60)
                client.login(user, PASSWORD)
                logged_in.wait()
                total = sum(len(crlf_form(r)) for r in raws)
                stat = client.cmd("STAT")
                if stat != "+OK %d %d" % (len(raws), total):
                    raise AssertionError("%s STAT: %s" % (user, stat))
                if not client.cmd("UIDL").startswith("+OK"):
                    raise AssertionError("%s UIDL refused" % user)
                uids = [l.split(b" ")[1].decode() for l in client.multiline()]
                if uids != names:
                    raise AssertionError("%s UIDL: %r != %r" % (user, uids, names))
                for i, raw in enumerate(raws, 1):
                    reply = client.cmd("RETR %d" % i)
                    if reply != "+OK %d octets" % len(crlf_form(raw)):
                        raise AssertionError("%s RETR %d: %s" % (user, i, reply))
                    if client.multiline_wire() != wire_body(raw):
                        raise AssertionError("%s RETR %d: wrong bytes" % (user, i))
                checked.wait()
                if not client.cmd("QUIT").startswith("+OK"):
                    raise AssertionError("%s QUIT refused" % user)
            except BaseException as error:  # reported below, per user
                failures.append("%s: %r" % (user, error))
                logged_in.abort()
                checked.abort()
            finally:
                if client is not None:
                    client.close()

        threads = [threading.Thread(target=session, args=(user,))
                   for user in expected]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        self.assertEqual(failures, [])
        for user, (raws, names) in expected.items():
            self.assertEqual(server.message_files(user), sorted(names))


class Deletion(PopkitTestCase):
    def setUp(self):
        self.server = self.make_server(start=False)
        self.server.add_user("alice", PASSWORD)
        self.raws = [message_for("alice", i) for i in range(5)]
        self.names = [self.server.add_message("alice", raw) for raw in self.raws]
        self.server.start()

    def relogin(self, attempts_s: float = 5.0):
        """Log in again; a dropped session's lock may take a moment to be
        noticed by the server, so IN-USE is retried for a few seconds."""
        deadline = time.monotonic() + attempts_s
        while True:
            client = self.server.raw()
            self.addCleanup(client.close)
            client.cmd("USER alice")
            reply = client.cmd("PASS " + PASSWORD)
            if reply.startswith("+OK"):
                return client
            if not reply.startswith("-ERR [IN-USE]") or time.monotonic() > deadline:
                self.fail("login after drop: " + reply)
            client.close()
            time.sleep(0.1)

    def test_dele_then_dropped_connection_deletes_nothing(self):
        client = self.server.raw()
        client.login("alice", PASSWORD)
        for i in (1, 3, 5):
            self.assertTrue(client.cmd("DELE %d" % i).startswith("+OK"))
        client.abort()
        again = self.relogin()
        self.assertEqual(again.cmd("STAT").split()[1], "5")
        self.assertEqual(self.server.message_files("alice"), sorted(self.names))

    def test_dele_then_quit_deletes_exactly_those(self):
        client = self.server.raw()
        client.login("alice", PASSWORD)
        for i in (2, 4):
            self.assertTrue(client.cmd("DELE %d" % i).startswith("+OK"))
        self.assertTrue(client.cmd("QUIT").startswith("+OK"))
        self.assertEqual(client.wait_closed(5), b"")
        kept = [self.names[0], self.names[2], self.names[4]]
        self.assertEqual(self.server.message_files("alice"), sorted(kept))
        again = self.relogin()
        self.assertEqual(again.cmd("STAT"), "+OK 3 %d" % sum(
            len(crlf_form(self.raws[i])) for i in (0, 2, 4)))
        self.assertTrue(again.cmd("UIDL").startswith("+OK"))
        self.assertEqual([l.split(b" ")[1].decode() for l in again.multiline()], kept)
        self.assertTrue(again.cmd("RETR 2").startswith("+OK"))
        self.assertEqual(again.multiline_wire(), wire_body(self.raws[2]))

    def test_dele_all_then_quit_empties_the_mailbox(self):
        client = self.server.raw()
        client.login("alice", PASSWORD)
        for i in range(1, 6):
            self.assertTrue(client.cmd("DELE %d" % i).startswith("+OK"))
        self.assertEqual(client.cmd("STAT"), "+OK 0 0")
        self.assertTrue(client.cmd("QUIT").startswith("+OK"))
        client.wait_closed(5)
        self.assertEqual(self.server.message_files("alice"), [])

    def test_connection_dropped_in_the_middle_of_a_big_retr(self):
        self.server.add_message("alice", big_message(6))
        client = self.server.raw()
        client.login("alice", PASSWORD)
        self.assertTrue(client.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(client.cmd("RETR 6").startswith("+OK"))
        client.file.read(100000)
        client.abort()
        again = self.relogin()
        self.assertEqual(again.cmd("STAT").split()[1], "6")
        self.assertEqual(len(self.server.message_files("alice")), 6)

    def test_second_session_gets_in_use_until_the_first_quits(self):
        first = self.server.raw()
        self.addCleanup(first.close)
        first.login("alice", PASSWORD)
        self.assertTrue(first.cmd("DELE 1").startswith("+OK"))
        second = self.server.raw()
        self.addCleanup(second.close)
        self.assertTrue(second.cmd("USER alice").startswith("+OK"))
        reply = second.cmd("PASS " + PASSWORD)
        self.assertTrue(reply.startswith("-ERR [IN-USE]"), reply)
        # Several tries land on either worker; all must see the lock.
        for _ in range(4):
            third = self.server.raw()
            third.cmd("USER alice")
            self.assertTrue(third.cmd("PASS " + PASSWORD).startswith("-ERR [IN-USE]"))
            third.close()
        self.assertTrue(first.cmd("QUIT").startswith("+OK"))
        first.wait_closed(5)
        # The refused session is still in AUTHORIZATION and may try again.
        self.assertTrue(second.cmd("USER alice").startswith("+OK"))
        reply = second.cmd("PASS " + PASSWORD)
        self.assertTrue(reply.startswith("+OK"), reply)
        self.assertEqual(second.cmd("STAT").split()[1], "4")


class Backpressure(PopkitTestCase):
    def test_client_that_does_not_read_does_not_grow_server_memory(self):
        self.check_slow_reader(tls=False)

    def test_slow_reader_over_tls_does_not_grow_server_memory(self):
        # Under TLS the server encrypts into its own queue: it must stop
        # encrypting, not buffer 96 MiB of records.
        self.check_slow_reader(tls=True)

    def check_slow_reader(self, tls):
        # A small ASan quarantine, so freed chunks are not counted as
        # growth in sanitizer builds.
        server = self.make_server(start=False, tls=tls, env={
            "ASAN_OPTIONS": "quarantine_size_mb=8:detect_leaks=1"})
        server.add_user("alice", PASSWORD)
        raw = big_message(6)
        server.add_message("alice", raw)
        server.start()
        if tls:
            client = server.raw(timeout=60, port=server.tls_port,
                                ssl_context=server.ssl_context())
        else:
            client = server.raw(timeout=60)
        self.addCleanup(client.close)
        client.login("alice", PASSWORD)
        # Warm up: one full RETR, so buffers and caches exist before the
        # baseline is taken.
        self.assertTrue(client.cmd("RETR 1").startswith("+OK"))
        self.assertEqual(client.multiline_wire(), wire_body(raw))
        before = server.rss_kib()
        # 16 pipelined RETRs are 96 MiB of replies; the client reads none
        # of it for a while. popkitd must wait for the socket, not buffer.
        count = 16
        client.send(b"RETR 1\r\n" * count)
        time.sleep(2)
        grown_mib = (server.rss_kib() - before) / 1024
        self.assertLess(grown_mib, 48, "popkitd grew by %.0f MiB for a slow reader" % grown_mib)
        one = b"+OK %d octets\r\n" % len(crlf_form(raw)) + wire_body(raw)
        received = client.read_exactly(len(one) * count)
        for i in range(count):
            self.assertTrue(received[i * len(one):(i + 1) * len(one)] == one,
                            "reply %d differs" % (i + 1))
        self.assertTrue(client.cmd("QUIT").startswith("+OK"))


class UniqueIds(PopkitTestCase):
    def uidl(self, server):
        client = server.raw()
        self.addCleanup(client.close)
        client.login("alice", PASSWORD)
        self.assertTrue(client.cmd("UIDL").startswith("+OK"))
        result = [l.decode() for l in client.multiline()]
        self.assertTrue(client.cmd("QUIT").startswith("+OK"))
        client.wait_closed(5)
        return result

    @maildir_only("renames message files from new/ to cur/ with flags")
    def test_uidl_stable_across_reconnect_and_rename_to_cur(self):
        server = self.make_server(start=False)
        server.add_user("alice", PASSWORD)
        names = [server.add_message("alice", message_for("alice", i))
                 for i in range(3)]
        server.start()
        first = self.uidl(server)
        self.assertEqual(first, ["%d %s" % (i + 1, n) for i, n in enumerate(names)])
        self.assertEqual(self.uidl(server), first)
        # What a mail client does after reading: move new/x to cur/x:2,S.
        maildir = server.maildir("alice")
        for name in names[:2]:
            os.rename(os.path.join(maildir, "new", name),
                      os.path.join(maildir, "cur", name + ":2,S"))
        self.assertEqual(self.uidl(server), first)
        os.rename(os.path.join(maildir, "cur", names[0] + ":2,S"),
                  os.path.join(maildir, "cur", names[0] + ":2,RS"))
        self.assertEqual(self.uidl(server), first)


    @maildir_only("file names too long or odd to be unique ids")
    def test_file_names_that_cannot_be_uids_still_give_valid_uids(self):
        server = self.make_server(start=False)
        server.add_user("alice", PASSWORD)
        raws = [message_for("alice", i) for i in range(4)]
        server.add_message("alice", raws[0], name="1700000001." + "L" * 120)
        server.add_message("alice", raws[1], name="1700000002.caf\u00e9 space.host")
        server.add_message("alice", raws[2], name="1700000003." + "L" * 119 + "M")
        server.add_message("alice", raws[3], name="1700000004.ok.host:2,S", subdir="cur")
        server.start()
        first = self.uidl(server)
        self.assertEqual(first, self.uidl(server))
        uids = [line.split(" ", 1)[1] for line in first]
        self.assertEqual(len(uids), 4)
        self.assertEqual(len(set(uids)), 4, uids)
        for uid in uids:
            self.assertRegex(uid, r"^[\x21-\x7e]{1,70}$")
        self.assertEqual(uids[3], "1700000004.ok.host")
        client = server.raw()
        self.addCleanup(client.close)
        client.login("alice", PASSWORD)
        got = []
        for i in range(1, 5):
            self.assertTrue(client.cmd("RETR %d" % i).startswith("+OK"))
            got.append(client.multiline_wire())
        self.assertEqual(sorted(got), sorted(wire_body(r) for r in raws))


class UserNames(PopkitTestCase):
    def test_obrien_gets_his_own_maildir(self):
        server = self.make_server(start=False)
        server.add_user("o'brien", "irish")
        server.add_user("obrien", "other")
        mine = message_for("o'brien", 1)
        server.add_message("o'brien", mine)
        server.add_message("obrien", message_for("obrien", 1))
        server.add_message("obrien", message_for("obrien", 2))
        server.start()
        pop = server.pop("o'brien", "irish")
        try:
            self.assertEqual(pop.stat(), (1, len(crlf_form(mine))))
            _, lines, _ = pop.retr(1)
            self.assertEqual(b"".join(l + b"\r\n" for l in lines), crlf_form(mine))
        finally:
            pop.quit()

    @maildir_only("user names that a naive %u expands to paths outside the mail root")
    def test_hostile_names_cannot_reach_other_mail(self):
        server = self.make_server(start=False)
        secret = b"Subject: secret\n\nnot for you\n"
        # Mail that a naive expansion of <mail_root>/%u would reach.
        server.add_user("victim", "victim-pw")
        server.add_message("victim", secret)
        outside = server.make_maildir(os.path.join(server.dir, "evil"))
        server.add_message(None, secret, maildir=outside)
        hostile = ["../evil", "../mail/victim", "..", "/", "a/../../evil",
                   "%2E%2E%2Fevil", "./victim"]
        for i, name in enumerate(hostile):
            server.add_user(name, "h%d" % i)
        server.start()
        before_outside = sorted(os.listdir(server.dir))
        for i, name in enumerate(hostile):
            with self.subTest(user=name):
                client = server.raw()
                self.addCleanup(client.close)
                client.cmd("USER " + name)
                reply = client.cmd("PASS h%d" % i)
                if reply.startswith("+OK"):
                    # Logged in: the mailbox must be a fresh, empty one.
                    self.assertEqual(client.cmd("STAT"), "+OK 0 0")
                    self.assertTrue(client.cmd("QUIT").startswith("+OK"))
                    client.wait_closed(5)
                else:
                    self.assertTrue(reply.startswith("-ERR"), reply)
        # Nothing was created or removed beside the mail root, and the
        # victim's and the outside mail are untouched.
        self.assertEqual(sorted(os.listdir(server.dir)), before_outside)
        self.assertEqual(len(server.message_files("victim")), 1)
        self.assertEqual(len(server.message_files(None, maildir=outside)), 1)
        self.assertEqual(sorted(os.listdir(outside)), ["cur", "new", "tmp"])
        victim = server.raw()
        self.addCleanup(victim.close)
        victim.login("victim", "victim-pw")
        self.assertEqual(victim.cmd("STAT").split()[1], "1")


class IPv6(PopkitTestCase):
    @unittest.skipUnless(ipv6_loopback_available(), "no IPv6 loopback on this host")
    def test_ipv6_loopback_listener(self):
        server = self.make_server(host="::1", start=False)
        server.add_user("alice", PASSWORD)
        raw = message_for("alice", 1)
        server.add_message("alice", raw)
        server.start()
        client = server.raw()
        self.addCleanup(client.close)
        self.assertEqual(client.greeting, "+OK popkit ready.")
        # ::1 is loopback, so plaintext USER/PASS is allowed by default.
        client.login("alice", PASSWORD)
        self.assertTrue(client.cmd("RETR 1").startswith("+OK"))
        self.assertEqual(client.multiline_wire(), wire_body(raw))
        self.assertTrue(client.cmd("QUIT").startswith("+OK"))

    @unittest.skipUnless(ipv6_loopback_available(), "no IPv6 loopback on this host")
    def test_ipv4_and_ipv6_listeners_together(self):
        from popkit_harness import free_port
        v6_port = free_port("::1")
        server = self.make_server(start=False)
        server.config["listen"].append({"address": "::1", "port": v6_port})
        server.add_user("alice", PASSWORD)
        server.start()
        server.wait_listening("::1", v6_port)
        for host, port in (("127.0.0.1", server.port), ("::1", v6_port)):
            with self.subTest(host=host):
                client = server.raw(host=host, port=port)
                client.login("alice", PASSWORD)
                self.assertEqual(client.cmd("STAT"), "+OK 0 0")
                self.assertTrue(client.cmd("QUIT").startswith("+OK"))
                client.wait_closed(5)
                client.close()


if __name__ == "__main__":
    run_tests()
