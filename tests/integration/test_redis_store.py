#!/usr/bin/env python3
"""redis-cache in front of a store, against a real Redis and a real
PostgreSQL, as a client and an operator see it: bodies served from Redis
byte-exact (and big ones never stored there), the listing cache under the
Redis lock never hiding a delivery or showing a deletion, a mailbox read
while PostgreSQL is stopped, the Redis lock shared by two popkitd (given
back, never taken from another owner, renewed, expired after a crash),
Redis stopped under a running session, and --check-config.

The store is redis-cache over postgres (the auth entry too, in the
harness's cache mode). Servers run one worker, so one store instance counts
everything and its "cache: hits=... misses=..." line (every
stats_interval_s, set to 1) tells what each RETR and each login was.

The harness's Redis (one per test process, a key prefix per popkitd)
serves the tests that leave it alone; the test that stops Redis gets one
of its own.
"""

import hashlib
import os
import re
import signal
import time

import popkit_harness
from popkit_harness import (crlf_form, expected_top, redis_cache_entry, run_tests,
                            special_messages, wire_body)
from test_postgres import (DELETE_TEMP, IN_USE, READ_TEMP, PostgresTestCase,
                           poll, postgres_module)
import test_redis_cache
from test_redis_cache import BOUND_S, REACHABLE_LINE, STATS_KEYS, UNREACHABLE_LINE

STATS_LINE = re.compile(r"redis-cache\(\$\.store\): cache: hits=(\d+) misses=(\d+) "
                        r"fall_throughs=(\d+) stale_hits=(\d+)")
MESSAGES = [raw for _, raw in special_messages()[:-1]]  # dots, CRLF and LF mixed, ...
LOCK_IN_REDIS_LINE = "lock in Redis"
LOCK_TTL_S = 3

cluster = None


def setUpModule():
    global cluster
    cluster = popkit_harness.shared_pg_cluster()
    test_redis_cache.cluster = cluster  # what its outage() stops


def tearDownModule():
    cluster.cleanup()


def mailbox_hash(name: str) -> str:
    """How redis-cache names a mailbox in its keys (README: SHA-256)."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


class StoreCacheTestCase(PostgresTestCase, test_redis_cache.RedisCacheTestCase):
    """PostgresTestCase's clients, delivery and counts; the auth cache
    tests' counters (read from the store's line) and Redis helpers."""

    def store_server(self, redis=None, lock=True, start=True, **cache_settings):
        """A popkitd (one worker) whose users and mail are in a new
        PostgreSQL database, its store behind redis-cache. Without redis,
        the harness's Redis and cache mode (the auth entry is cached too);
        with one, that Redis in front of the store only, configured by
        hand (a test that stops Redis must not have the harness check that
        it never did)."""
        settings = dict({"stats_interval_s": 1}, **cache_settings)
        server = self.make_server(start=False, store="postgres",
                                  cache="redis" if redis is None else "none",
                                  cache_lock=lock, config={"workers": 1})
        if redis is None:
            server.config["store"].update(settings)
        else:
            if lock:
                settings["lock"] = True
            server.config["store"] = redis_cache_entry(
                postgres_module(server.conninfo), redis.address,
                "popkit-own-%d:" % os.getpid(), **settings)
        if start:
            server.start()
        return server

    def prefix(self, server) -> str:
        return server.config["store"]["key_prefix"]

    def redis_of(self, server):
        """The Redis the store's redis-cache talks to."""
        return self.own_redis if server.redis is None else server.redis

    def stats(self, server) -> dict:
        """The counters of the store's last "cache:" line."""
        found = STATS_LINE.findall(server.stderr_text())
        values = found[-1] if found else ("0",) * len(STATS_KEYS)
        return dict(zip(STATS_KEYS, (int(v) for v in values)))

    def settled_stats(self, server) -> dict:
        """The counters once everything done so far is in a "cache:" line:
        a line comes every stats_interval_s (1) while they move."""
        time.sleep(1.5)
        return self.stats(server)

    def body_key(self, server, uid, mailbox="alice") -> str:
        return "%sbody:%s:%s" % (self.prefix(server), mailbox_hash(mailbox), uid)

    def lock_key(self, server, mailbox="alice") -> str:
        return "%slock:%s" % (self.prefix(server), mailbox_hash(mailbox))

    def body_keys(self, server) -> list:
        return self.redis_of(server).all_keys(self.prefix(server) + "body:*")

    def read_all(self, client, raws):
        """RETR of every message, each checked against what was stored."""
        for i, raw in enumerate(raws, 1):
            with self.subTest(retr=i):
                self.assertEqual(self.retr(client, i), wire_body(raw))

    def quit(self, client, deleted=0):
        expected = "+OK Logging out."
        if deleted:
            expected = "+OK Logging out, %d messages deleted." % deleted
        self.assertEqual(client.cmd("QUIT"), expected)
        client.close()

    def stat_line(self, raws) -> str:
        return "+OK %d %d" % (len(raws), sum(len(crlf_form(r)) for r in raws))

    def deliver_moving_generation(self, server, user, raw):
        """popkit-deliver through server's config; a delivery that could
        not move the mailbox's generation says so in its log, and a listing
        from before may then be used up to listing_ttl_s (README)."""
        result = self.deliver(server, user, raw)
        self.assert_delivered(result)
        stderr = result.stderr.decode("utf-8", "replace")
        self.assertNotIn("could not be invalidated", stderr)
        self.assertNotIn(UNREACHABLE_LINE % self.redis_of(server).address, stderr)

    def uidl(self, client) -> list:
        self.assertTrue(client.cmd("UIDL").startswith("+OK"))
        return [line.split(b" ")[1].decode() for line in client.multiline()]


# ---- 1. Bodies --------------------------------------------------------------


class Bodies(StoreCacheTestCase):
    MAX_BODY_BYTES = 4096

    def test_a_second_retr_is_a_hit_and_byte_exact(self):
        server = self.store_server(start=False, lock=False)
        server.add_user("alice", "alice pw")
        uids = [server.add_message("alice", raw) for raw in MESSAGES]
        server.start()
        c = self.logged_in(server, "alice", "alice pw")
        self.read_all(c, MESSAGES)
        self.assert_stats(server, hits=0, misses=len(MESSAGES), fall_throughs=0)
        # Redis holds the bytes the store gave, under the message's uid.
        for uid, raw in zip(uids, MESSAGES):
            key = self.body_key(server, uid)
            self.assertEqual(poll(lambda: server.redis.get(key), BOUND_S, 0.05), raw)
        # Again in the same session, then in a new one: from Redis.
        self.read_all(c, MESSAGES)
        self.assert_stats(server, hits=len(MESSAGES), misses=len(MESSAGES))
        self.quit(c)
        c = self.logged_in(server, "alice", "alice pw")
        self.read_all(c, MESSAGES)
        self.assert_stats(server, hits=2 * len(MESSAGES), misses=len(MESSAGES),
                          fall_throughs=0)
        self.quit(c)

    def test_a_body_over_max_body_bytes_is_never_in_redis(self):
        server = self.store_server(start=False, lock=False,
                                   max_body_bytes=self.MAX_BODY_BYTES)
        server.add_user("alice", "alice pw")
        head = b"From: a@test.local\nSubject: sized\n\n"
        # LF lines of 64 bytes: the CRLF form (the LIST size) is exactly
        # max_body_bytes, and "up to" includes it.
        at_limit = head + b"." + b"a" * 62 + b"\n"
        at_limit += b"b" * (self.MAX_BODY_BYTES - len(crlf_form(at_limit)) - 2) + b"\n"
        self.assertEqual(len(crlf_form(at_limit)), self.MAX_BODY_BYTES)
        over = head + (b".over the limit" + b"x" * 48 + b"\n") * 200
        at_uid = server.add_message("alice", at_limit)
        over_uid = server.add_message("alice", over)
        server.start()
        for _ in range(2):
            c = self.logged_in(server, "alice", "alice pw")
            self.assertEqual(c.cmd("LIST 1"), "+OK 1 %d" % self.MAX_BODY_BYTES)
            self.read_all(c, [at_limit, over])
            self.assertEqual(self.retr(c, 2), wire_body(over))
            self.quit(c)
        self.assertEqual(poll(lambda: server.redis.get(self.body_key(server, at_uid)),
                              BOUND_S, 0.05), at_limit)
        self.assertEqual(self.body_keys(server),
                         [self.body_key(server, at_uid).encode()])
        self.assertNotIn(over_uid.encode(), b" ".join(server.redis.all_keys("*")))
        # Only the small one ever asked Redis: a miss, then a hit.
        self.assert_stats(server, hits=1, misses=1, fall_throughs=0)

    def test_top_on_a_cached_body(self):
        server = self.store_server(start=False, lock=False)
        server.add_user("alice", "alice pw")
        for raw in MESSAGES:
            server.add_message("alice", raw)
        server.start()
        c = self.logged_in(server, "alice", "alice pw")
        # A TOP before any RETR reads part of a body: what Redis gets
        # from it must not be served as the whole message.
        for i, raw in enumerate(MESSAGES, 1):
            self.assertTrue(c.cmd("TOP %d 0" % i).startswith("+OK"))
            self.assertEqual(c.multiline_wire(), wire_body(expected_top(raw, 0)))
        self.read_all(c, MESSAGES)
        self.quit(c)
        c = self.logged_in(server, "alice", "alice pw")
        self.read_all(c, MESSAGES)
        self.quit(c)
        c = self.logged_in(server, "alice", "alice pw")
        for i, raw in enumerate(MESSAGES, 1):
            for lines in (0, 1, 100):
                with self.subTest(message=i, lines=lines):
                    self.assertTrue(c.cmd("TOP %d %d" % (i, lines)).startswith("+OK"))
                    self.assertEqual(c.multiline_wire(),
                                     wire_body(expected_top(raw, lines)))
        # And a whole RETR after TOP in the same session.
        self.read_all(c, MESSAGES)
        self.quit(c)
        stats = self.settled_stats(server)
        # Every body was in Redis after the first session's RETR at the
        # latest; since then every read was a hit.
        self.assertGreaterEqual(stats["hits"], 3 * len(MESSAGES), stats)
        self.assertLessEqual(stats["misses"], 2 * len(MESSAGES), stats)
        self.assertEqual(stats["fall_throughs"], 0, stats)


# ---- 2. The listing cache ---------------------------------------------------


class Listings(StoreCacheTestCase):
    def test_a_delivery_and_a_deletion_show_at_the_next_login(self):
        server = self.store_server(start=False)
        server.add_user("alice", "alice pw")
        raws = MESSAGES[:3]
        uids = [server.add_message("alice", raw) for raw in raws]
        server.start()
        c = self.logged_in(server, "alice", "alice pw")
        self.assertEqual(c.cmd("STAT"), self.stat_line(raws))
        self.assertEqual(self.retr(c, 1), wire_body(raws[0]))  # its body in Redis
        self.quit(c)
        self.assert_stats(server, hits=0, misses=2)  # the listing, the body
        c = self.logged_in(server, "alice", "alice pw")
        self.assertEqual(self.uidl(c), uids)
        self.quit(c)
        self.assert_stats(server, hits=1, misses=2)  # the listing came from Redis

        # A delivery through the same config, right after.
        new = b"From: b@test.local\nSubject: new\n\n.delivered\r\nmixed\n"
        self.deliver_moving_generation(server, "alice", new)
        raws.append(new)
        c = self.logged_in(server, "alice", "alice pw")
        self.assertEqual(c.cmd("STAT"), self.stat_line(raws))
        listed = self.uidl(c)
        self.assertEqual(listed[:3], uids)
        self.assertEqual(len(listed), 4)
        self.read_all(c, raws)
        self.quit(c)
        self.assert_stats(server, hits=2, misses=3 + 3)  # body 1 was in Redis

        # A deletion: the message and its body are gone at once.
        body = self.body_key(server, uids[0])
        self.assertEqual(server.redis.get(body), raws[0])
        c = self.logged_in(server, "alice", "alice pw")
        self.assertEqual(c.cmd("DELE 1"), "+OK Message 1 marked to be deleted.")
        self.quit(c, deleted=1)
        self.assertIsNone(server.redis.get(body))
        c = self.logged_in(server, "alice", "alice pw")
        self.assertEqual(c.cmd("STAT"), self.stat_line(raws[1:]))
        self.assertEqual(self.uidl(c), listed[1:])
        self.read_all(c, raws[1:])
        self.quit(c)
        self.assertEqual(server.message_files("alice"), sorted(listed[1:]))

    def test_a_delivery_during_a_session_from_a_cached_listing(self):
        server = self.store_server(start=False)
        server.add_user("alice", "alice pw")
        raws = MESSAGES[:3]
        uids = [server.add_message("alice", raw) for raw in raws]
        server.start()
        self.quit(self.logged_in(server, "alice", "alice pw"))
        c = self.logged_in(server, "alice", "alice pw")
        self.assert_stats(server, hits=1, misses=1)  # this listing is from Redis
        new = b"From: b@test.local\nSubject: during\n\narrived meanwhile\n"
        self.deliver_moving_generation(server, "alice", new)
        # The session keeps the listing it logged in with (RFC 1939), and
        # its numbers still name the same messages when next opens late.
        self.assertEqual(c.cmd("STAT"), self.stat_line(raws))
        self.assertEqual(c.cmd("DELE 2"), "+OK Message 2 marked to be deleted.")
        self.assertEqual(self.retr(c, 3), wire_body(raws[2]))
        self.quit(c, deleted=1)
        kept = [raws[0], raws[2], new]
        c = self.logged_in(server, "alice", "alice pw")
        self.assertEqual(c.cmd("STAT"), self.stat_line(kept))
        self.assertEqual(self.uidl(c)[:2], [uids[0], uids[2]])
        self.read_all(c, kept)
        self.quit(c)
        self.assertEqual(len(server.message_files("alice")), 3)
        self.assertNotIn(uids[1], server.message_files("alice"))


# ---- 3. PostgreSQL away -----------------------------------------------------


class PostgresAway(StoreCacheTestCase):
    def test_a_cached_mailbox_is_read_while_postgresql_is_stopped(self):
        server = self.store_server(start=False)
        server.add_user("alice", "alice pw")
        raws = MESSAGES[:3]
        uids = [server.add_message("alice", raw) for raw in raws]
        server.start()
        c = self.logged_in(server, "alice", "alice pw")
        self.read_all(c, raws[:2])  # the third body stays out of Redis
        self.quit(c)
        for uid in uids[:2]:
            self.assertTrue(poll(lambda: server.redis.get(self.body_key(server, uid)),
                                 BOUND_S, 0.05))
        self.assert_stats(server, hits=0, misses=3)

        self.outage(cluster.stop)
        c = self.logged_in(server, "alice", "alice pw")
        self.assertEqual(c.cmd("STAT"), self.stat_line(raws))
        self.assertEqual(self.uidl(c), uids)
        self.read_all(c, raws[:2])
        self.assertEqual(c.cmd("RETR 3"), READ_TEMP)
        self.assertEqual(c.cmd("NOOP"), "+OK Still here.")
        self.read_all(c, raws[:1])
        self.quit(c)
        self.assert_stats(server, hits=1 + 3, misses=3 + 1)

        cluster.start_again()

        def deleted():
            c = self.logged_in(server, "alice", "alice pw")
            self.assertEqual(c.cmd("DELE 1"), "+OK Message 1 marked to be deleted.")
            reply = c.cmd("QUIT")
            c.close()
            if reply != DELETE_TEMP:  # the pool may still be reconnecting
                self.assertEqual(reply, "+OK Logging out, 1 messages deleted.")
            return reply != DELETE_TEMP

        self.assertTrue(poll(deleted, BOUND_S), "no deletion after PostgreSQL's return")
        self.assertEqual(server.message_files("alice"), sorted(uids[1:]))


# ---- 4. The Redis lock ------------------------------------------------------


class RedisLock(StoreCacheTestCase):
    def two_hosts(self):
        """Two popkitd on one database and one Redis, locks of lock_ttl_s
        in both Redis and PostgreSQL; alice has one message."""
        a = self.store_server(start=False, lock_ttl_s=LOCK_TTL_S)
        a.config["store"]["next"]["lock_ttl_s"] = LOCK_TTL_S
        a.add_user("alice", "alice pw")
        a.add_message("alice", MESSAGES[0])
        a.start()
        b = self.make_server(start=False, store="maildir", cache="redis",
                             config={"workers": 1})
        b.config["auth"] = a.config["auth"]
        b.config["store"] = a.config["store"]
        b.start()
        return a, b

    def lock_value(self, server):
        return server.redis.get(self.lock_key(server))

    def test_one_session_per_mailbox_across_hosts(self):
        a, b = self.two_hosts()
        key = self.lock_key(a)
        self.assertIsNone(self.lock_value(a))
        on_a = self.logged_in(a, "alice", "alice pw")
        self.assertEqual(a.redis.all_keys(self.prefix(a) + "lock:*"), [key.encode()])
        self.assertTrue(0 < a.redis.command("PTTL", key) <= LOCK_TTL_S * 1000)
        self.assertEqual(self.login_reply(b, "alice", "alice pw"), IN_USE)
        with self.subTest("B's log says the lock is in Redis"):
            # The line is out before the -ERR.
            self.assertIn(LOCK_IN_REDIS_LINE, b.stderr_text())
        self.quit(on_a)
        # QUIT answers once the key is given back: B gets in at once.
        self.assertIsNone(self.lock_value(a))
        on_b = self.logged_in(b, "alice", "alice pw")
        self.assertEqual(self.login_reply(a, "alice", "alice pw"), IN_USE)
        self.quit(on_b)
        self.assertIsNone(self.lock_value(a))

        # Somebody else's lock is not given back by a session that lost it.
        on_a = self.logged_in(a, "alice", "alice pw")
        self.assertEqual(a.redis.command("SET", key, "another owner", "XX", "PX", 60000),
                         "OK")
        self.assertEqual(on_a.cmd("STAT"), self.stat_line(MESSAGES[:1]))
        self.quit(on_a)
        self.assertEqual(self.lock_value(a), b"another owner")
        self.assertEqual(self.login_reply(b, "alice", "alice pw"), IN_USE)
        a.redis.command("DEL", key)
        self.quit(self.logged_in(b, "alice", "alice pw"))

    def test_a_long_session_keeps_its_lock(self):
        a, b = self.two_hosts()
        on_a = self.logged_in(a, "alice", "alice pw")
        time.sleep(2 * LOCK_TTL_S + 1)
        self.assertEqual(self.login_reply(b, "alice", "alice pw"), IN_USE)
        self.assertTrue(0 < a.redis.command("PTTL", self.lock_key(a)) <= LOCK_TTL_S * 1000)
        self.assertEqual(on_a.cmd("DELE 1"), "+OK Message 1 marked to be deleted.")
        self.quit(on_a, deleted=1)
        self.assertEqual(self.mailbox_count(a, "alice"), 0)

    def test_the_lock_of_a_killed_popkitd_expires_after_lock_ttl_s(self):
        a, b = self.two_hosts()
        on_a = self.logged_in(a, "alice", "alice pw")
        self.assertEqual(on_a.cmd("DELE 1"), "+OK Message 1 marked to be deleted.")
        a.signal(signal.SIGKILL)
        a.wait_exit(10)
        killed = time.monotonic()
        a.process = None  # nothing left for the harness to stop
        self.assertEqual(self.login_reply(b, "alice", "alice pw"), IN_USE)
        dead_token = self.lock_value(a)
        self.assertIsNotNone(dead_token)

        def b_logs_in():
            reply = self.login_reply(b, "alice", "alice pw")
            if not reply.startswith("+OK"):
                self.assertEqual(reply, IN_USE)
            return reply.startswith("+OK")

        self.assertTrue(poll(b_logs_in, LOCK_TTL_S + BOUND_S, 0.1), "the lock never expired")
        self.assertLess(time.monotonic() - killed, LOCK_TTL_S + 3)
        self.assertNotEqual(self.lock_value(a), dead_token)
        # The killed session deleted nothing.
        self.assertEqual(self.mailbox_count(a, "alice"), 1)


# ---- 5. Redis away ----------------------------------------------------------


class RedisAway(StoreCacheTestCase):
    def test_redis_stopped_under_a_session_with_a_cached_listing(self):
        redis = self.own_redis = self.private_redis()
        server = self.store_server(redis, start=False)
        server.add_user("alice", "alice pw")
        raws = MESSAGES[:4]
        uids = [server.add_message("alice", raw) for raw in raws]
        server.start()
        unreachable = UNREACHABLE_LINE % redis.address
        c = self.logged_in(server, "alice", "alice pw")
        self.read_all(c, raws[:1])
        self.quit(c)
        c = self.logged_in(server, "alice", "alice pw")  # the listing from Redis
        self.assert_stats(server, hits=1, misses=2, fall_throughs=0)

        redis.stop()
        # next opens the mailbox late for a body Redis cannot give.
        self.assertEqual(self.retr(c, 2), wire_body(raws[1]))
        self.assertEqual(self.retr(c, 1), wire_body(raws[0]))
        self.assertEqual(c.cmd("DELE 4"), "+OK Message 4 marked to be deleted.")
        self.quit(c, deleted=1)
        self.assertEqual(server.message_files("alice"), sorted(uids[:3]))
        for _ in range(3):
            c = self.logged_in(server, "alice", "alice pw")
            self.assertEqual(c.cmd("STAT"), self.stat_line(raws[:3]))
            self.read_all(c, raws[:3])
            self.quit(c)
        stats = self.settled_stats(server)
        fall_throughs = stats["fall_throughs"]
        # At least the lock of each login went to next.
        self.assertGreaterEqual(fall_throughs, 3, stats)
        self.assertEqual((stats["hits"], stats["misses"]), (1, 2))
        log = server.stderr_text()
        self.assertEqual(log.count(unreachable), 1, log)

        redis.start_again()
        self.assertTrue(server.wait_for_log(REACHABLE_LINE % redis.address, BOUND_S),
                        server.stderr_text())
        # The new Redis is empty: misses, then hits again.
        for _ in range(2):
            c = self.logged_in(server, "alice", "alice pw")
            self.assertEqual(self.uidl(c), uids[:3])
            self.read_all(c, raws[:3])
            self.quit(c)
        self.assert_stats(server, hits=1 + 1 + 3, misses=2 + 1 + 3,
                          fall_throughs=fall_throughs)
        self.assertEqual(server.stderr_text().count(unreachable), 1)


# ---- 6. --check-config ------------------------------------------------------


class StoreCheckConfig(test_redis_cache.CheckConfig):
    def test_check_config_names_the_bad_key(self):
        server = self.make_server(start=False, store="maildir")
        maildir = {"module": "maildir", "path": os.path.join(server.mail_root, "%u")}
        address = "127.0.0.1:%d" % popkit_harness.free_port()

        def cache(**settings):
            return dict(redis_cache_entry(maildir, address, "check:"), lock=True,
                        **settings)

        code, stderr = self.check(server, store=cache(
            max_body_bytes=0, lock_ttl_s=3, listing_ttl_s=1))
        self.assertEqual(code, 0, stderr)
        code, stderr = self.check(server, store=cache(
            max_body_bytes=64 << 20, lock_ttl_s=3600, listing_ttl_s=86400))
        self.assertEqual(code, 0, stderr)
        cases = [
            ("max_body_bytes", cache(max_body_bytes=-1)),
            ("max_body_bytes", cache(max_body_bytes=(64 << 20) + 1)),
            ("lock_ttl_s", cache(lock_ttl_s=2)),
            ("lock_ttl_s", cache(lock_ttl_s=3601)),
            ("listing_ttl_s", cache(listing_ttl_s=0)),
            ("listing_ttl_s", cache(listing_ttl_s=86401)),
        ]
        for key, store in cases:
            with self.subTest(key=key, store=store):
                code, stderr = self.check(server, store=store)
                self.assertEqual(code, 1, stderr)
                last = stderr.strip().splitlines()[-1]
                self.assertRegex(last, r"^popkitd: .*\$\.store.*[ (]%s: " % re.escape(key))


if __name__ == "__main__":
    run_tests()
