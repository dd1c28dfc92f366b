#!/usr/bin/env python3
"""redis-cache in front of an auth module, against a real Redis and a real
PostgreSQL, as an operator and a client see it: what Redis holds (never a
password, a stored secret or a user name), hits that need no PostgreSQL,
ttl_s, stale_ttl_s and negative_ttl_s as they play out in time, Redis
stopped, restarted and hung under a running popkitd, and --check-config.

The auth chain is redis-cache over postgres; the store is a maildir, so a
mailbox opens while PostgreSQL is stopped and a login is the only thing
that needs it. Servers run one worker, so one cache instance counts
everything and its "cache: hits=... misses=..." line (every
stats_interval_s, set to 1) tells what happened to each login.

The harness's Redis (one per test process, a key prefix per popkitd)
serves the tests that leave it alone; the tests that stop or hang Redis
get one of their own.
"""

import base64
import os
import re
import time

import popkit_harness
from popkit_harness import PopkitTestCase, hash_password, redis_cache_entry, run_tests
from redis_server import RedisServer
from test_auth_policy import ScramClient, challenge_of, plain_response
from test_postgres import AUTH_FAILED, AUTH_TEMP, as_bytes, poll

MESSAGE = b"From: a@test.local\nTo: alice@test.local\nSubject: cached\n\nhello\n"
STATS_LINE = re.compile(r"redis-cache\(\$\.auth\[0\]\): cache: hits=(\d+) misses=(\d+) "
                        r"fall_throughs=(\d+) stale_hits=(\d+)")
STATS_KEYS = ("hits", "misses", "fall_throughs", "stale_hits")
# redis-cache's lines about the Redis at an address.
UNREACHABLE_LINE = "Redis at %s is unreachable"
REACHABLE_LINE = "Redis at %s is reachable again"
STALE_LINE = "a success cached within stale_ttl_s lets the user in"
# Generous bounds for what must happen "within seconds"; sanitizer builds
# are several times slower than plain ones.
BOUND_S = 15
TIMEOUT_MS = 200

cluster = None


def setUpModule():
    global cluster
    cluster = popkit_harness.shared_pg_cluster()


def tearDownModule():
    cluster.cleanup()


class RedisCacheTestCase(PopkitTestCase):
    def cached_server(self, redis=None, start=True, **cache_settings):
        """A popkitd (one worker) whose users are in a new PostgreSQL
        database behind redis-cache, and whose mail is in maildirs.
        Without redis, the harness's Redis and cache mode; with one, that
        Redis, configured by hand (a test that stops or hangs Redis must
        not have the harness check that it never did)."""
        settings = dict({"stats_interval_s": 1}, **cache_settings)
        server = self.make_server(start=False, store="postgres",
                                  cache="redis" if redis is None else "none",
                                  config={"workers": 1})
        if redis is None:
            server.config["auth"][0].update(settings)
        else:
            postgres = {"module": "postgres", "conninfo": server.conninfo}
            server.config["auth"] = [redis_cache_entry(
                postgres, redis.address, "popkit-own-%d:" % os.getpid(), **settings)]
        server.config["store"] = {"module": "maildir",
                                  "path": os.path.join(server.mail_root, "%u")}
        if start:
            server.start()
        return server

    def add_user(self, server, name, password, scheme="plain"):
        """A user in PostgreSQL with one message in a maildir."""
        server.add_user(name, password, scheme)
        path = server.make_maildir(server.maildir(name))
        with open(os.path.join(path, "new", "1700000000.M1P1.test.local"), "wb") as f:
            f.write(MESSAGE)

    def set_password(self, server, name, password):
        server.sql("UPDATE popkit.users SET password = :'pw' WHERE name = :'name';",
                   pw=hash_password(password), name=name)

    def login_reply(self, server, user, password) -> str:
        """The reply to PASS; a session that got in reads its mailbox and
        QUITs, so the next login finds the mailbox free."""
        c = server.raw()
        try:
            self.assertEqual(c.cmd(b"USER " + as_bytes(user)), "+OK Send PASS.")
            reply = c.cmd(b"PASS " + as_bytes(password))
            if reply.startswith("+OK"):
                self.assertEqual(c.cmd("STAT"), "+OK 1 %d" % len(
                    popkit_harness.crlf_form(MESSAGE)))
                self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")
            return reply
        finally:
            c.close()

    def assert_logs_in(self, server, user, password):
        reply = self.login_reply(server, user, password)
        self.assertTrue(reply.startswith("+OK Logged in"), reply)

    def stats(self, server) -> dict:
        """The counters of the last "cache:" line (all 0 before the first)."""
        found = STATS_LINE.findall(server.stderr_text())
        values = found[-1] if found else ("0",) * len(STATS_KEYS)
        return dict(zip(STATS_KEYS, (int(v) for v in values)))

    def assert_stats(self, server, **expected):
        """Waits for a "cache:" line with these counters (the others as
        they are); the line comes every stats_interval_s while they move."""
        def matches():
            now = self.stats(server)
            return all(now[k] == v for k, v in expected.items())

        poll(matches, BOUND_S, 0.05)
        now = self.stats(server)
        self.assertEqual({k: now[k] for k in expected}, expected,
                         "counters of the last cache: line")

    def cache_entries(self, redis, prefix) -> dict:
        """Every key under prefix and its value."""
        return {key: redis.get(key) for key in redis.all_keys(prefix + "*")}

    def outage(self, stop):
        """stop() PostgreSQL now; it is started again after the test."""
        self.addCleanup(lambda: cluster.running() or cluster.start_again())
        stop()

    def private_redis(self) -> RedisServer:
        redis = RedisServer()
        self.addCleanup(redis.cleanup)
        redis.start()
        return redis


# ---- 1. Nothing secret in Redis --------------------------------------------


USERS = [  # name, password, scheme of the secret stored in PostgreSQL
    ("ursula-plain", "Plain Pass 1", "plain"),
    ("victor-crypt", "Crypt Pass 2", "sha512"),
    ("wilma-scram", "Scram Pass 3", "scram-sha-256"),
]
WRONG = "Wrong Guess 9"
NOBODY = ("xavier-nobody", "Nobody Pass 4")


def secret_parts(secret: str) -> set:
    """The stored secret and the pieces of it an attacker could use: a
    crypt string's salt and hash, a SCRAM secret's salt and keys (base64,
    raw and hex), a {PLAIN} secret's password."""
    parts = {secret}
    if secret.startswith("{PLAIN}"):
        parts.add(secret[len("{PLAIN}"):])
    elif secret.startswith("{SCRAM-SHA-256}"):
        for piece in secret[len("{SCRAM-SHA-256}"):].split(",")[1:]:
            raw = base64.b64decode(piece)
            parts.update((piece, raw, raw.hex()))
    else:
        parts.update(p for p in secret.split("$") if len(p) >= 8)
    return {p.encode() if isinstance(p, str) else p for p in parts}


def password_forms(password: str) -> set:
    raw = password.encode()
    return {raw, raw.hex().encode(), base64.b64encode(raw),
            raw.replace(b" ", b"")}


class NothingSecretInRedis(RedisCacheTestCase):
    def log_in_every_way(self):
        """Right and wrong passwords, with USER/PASS, AUTH PLAIN and AUTH
        SCRAM-SHA-256, for users whose secrets are in every scheme; returns
        the server once Redis holds what those logins left."""
        server = self.cached_server(start=False)
        for name, password, scheme in USERS:
            self.add_user(server, name, password, scheme)
        server.start()
        for name, password, _ in USERS:
            with self.subTest(user=name):
                self.assert_logs_in(server, name, password)
                self.assertEqual(self.login_reply(server, name, WRONG), AUTH_FAILED)
                for guess, good in ((password, True), (WRONG, False)):
                    c = server.raw()
                    self.addCleanup(c.close)
                    reply = c.cmd("AUTH PLAIN " + plain_response(name, guess))
                    self.assertEqual(reply.startswith("+OK"), good, reply)
                    self.assertEqual(c.cmd("QUIT")[:3], "+OK")
        self.assertEqual(self.login_reply(server, *NOBODY), AUTH_FAILED)
        name, password, _ = USERS[2]
        for guess, good in ((password, True), (WRONG, False)):
            c = server.raw()
            self.addCleanup(c.close)
            scram = ScramClient(name, guess)
            self.assertEqual(c.cmd("AUTH SCRAM-SHA-256"), "+ ")
            reply = c.cmd(scram.client_final(challenge_of(c.cmd(scram.client_first()))))
            self.assertEqual(reply.startswith("+ "), good, reply)
        # Every distinct user and password that USER/PASS or AUTH PLAIN
        # tried is one entry (the AUTH PLAIN logins were hits).
        expected = 2 * len(USERS) + 1
        self.assertEqual(poll(lambda: len(self.cache_entries(server.redis,
                                                             server.redis_prefix)),
                              BOUND_S, 0.05), expected)
        self.assert_stats(server, hits=2 * len(USERS), misses=expected)
        return server

    def assert_absent(self, server, forbidden: dict):
        """No key and no value anywhere in Redis (not only under the
        server's prefix) holds any of forbidden's byte strings."""
        everything = self.cache_entries(server.redis, "")
        self.assertTrue(everything)
        found = ["%s %r in %r = %r" % (what, needle, key, value)
                 for key, value in everything.items()
                 for what, needles in forbidden.items()
                 for needle in needles
                 if needle in key or needle in (value or b"")]
        self.assertEqual(found, [], "Redis holds what it must not:\n" + "\n".join(found))

    def test_no_password_and_no_stored_secret_in_redis(self):
        server = self.log_in_every_way()
        forbidden = {}
        for name, password, _ in USERS:
            forbidden["password of " + name] = password_forms(password)
        forbidden["wrong password"] = password_forms(WRONG)
        forbidden["unknown user's password"] = password_forms(NOBODY[1])
        for name, secret in server.users:
            forbidden["stored secret of " + name] = secret_parts(secret)
        self.assert_absent(server, forbidden)

    def test_no_user_name_in_redis(self):
        server = self.log_in_every_way()
        names = [name for name, _, _ in USERS] + [NOBODY[0]]
        self.assert_absent(server, {"user name": {n.encode() for n in names}})


# ---- 2. Hits ----------------------------------------------------------------


class Hits(RedisCacheTestCase):
    def test_a_cached_success_needs_no_postgresql(self):
        server = self.cached_server(start=False)
        self.add_user(server, "alice", "alice pw")
        self.add_user(server, "bob", "bob pw", "scram-sha-256")
        server.start()
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_stats(server, hits=0, misses=1)
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_stats(server, hits=1, misses=1)

        self.outage(cluster.stop)
        self.assert_logs_in(server, "alice", "alice pw")
        c = server.raw()
        self.addCleanup(c.close)
        self.assertTrue(c.cmd("AUTH PLAIN " + plain_response("alice", "alice pw"))
                        .startswith("+OK Logged in"))
        self.assertEqual(c.cmd("RETR 1").split()[0], "+OK")
        c.multiline()
        self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")
        self.assert_stats(server, hits=3, misses=1, fall_throughs=0)
        # What is not cached needs PostgreSQL: another password, another
        # user, and SCRAM (a stored credential never goes to Redis).
        self.assertEqual(self.login_reply(server, "alice", "other pw"), AUTH_TEMP)
        self.assertEqual(self.login_reply(server, "bob", "bob pw"), AUTH_TEMP)
        c = server.raw()
        self.addCleanup(c.close)
        scram = ScramClient("bob", "bob pw")
        self.assertEqual(c.cmd("AUTH SCRAM-SHA-256"), "+ ")
        self.assertEqual(c.cmd(scram.client_first()), AUTH_TEMP)


# ---- 3. ttl_s and stale_ttl_s -----------------------------------------------


class Expiry(RedisCacheTestCase):
    def wait_stale(self, since: float, ttl_s: int = 1):
        """Until an entry learnt at time since is older than ttl_s: the
        module counts whole seconds of the wall clock."""
        time.sleep(max(0.0, since + ttl_s + 0.05 - time.time()))

    def test_a_stale_success_asks_postgresql_and_a_new_password_decides(self):
        server = self.cached_server(start=False, ttl_s=1)
        self.add_user(server, "alice", "old pw")
        server.start()
        learnt = time.time()
        self.assert_logs_in(server, "alice", "old pw")
        self.set_password(server, "alice", "new pw")
        self.wait_stale(learnt)
        self.assertEqual(self.login_reply(server, "alice", "old pw"), AUTH_FAILED)
        self.assert_logs_in(server, "alice", "new pw")
        self.assert_stats(server, hits=0, misses=3, stale_hits=0)
        # PostgreSQL's answer replaced the stale success.
        self.assertEqual(self.login_reply(server, "alice", "old pw"), AUTH_FAILED)
        self.assert_stats(server, hits=1, misses=3)

    def test_a_stale_success_lets_in_while_postgresql_is_down_until_stale_ttl_s(self):
        stale_ttl_s = 5
        server = self.cached_server(start=False, ttl_s=1, stale_ttl_s=stale_ttl_s)
        self.add_user(server, "alice", "alice pw")
        self.add_user(server, "bob", "bob pw")
        server.start()
        learnt = time.time()
        self.assert_logs_in(server, "alice", "alice pw")
        entries = poll(lambda: self.cache_entries(server.redis, server.redis_prefix),
                       BOUND_S, 0.05)
        self.assertEqual(len(entries), 1, entries)
        (key, _), = entries.items()
        ttl = server.redis.command("TTL", key)
        self.assertTrue(stale_ttl_s - 2 <= ttl <= stale_ttl_s, ttl)

        self.outage(cluster.stop)
        self.wait_stale(learnt)
        self.assertLess(time.time() - learnt, stale_ttl_s - 1, "PostgreSQL took too long "
                        "to stop for this test to mean anything")
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_stats(server, hits=0, stale_hits=1)
        self.assertIn(STALE_LINE, server.stderr_text())
        misses = self.stats(server)["misses"]
        # Only the cached password, and only for alice; never [AUTH]: the
        # password may be right, PostgreSQL could not say.
        self.assertEqual(self.login_reply(server, "alice", "bob pw"), AUTH_TEMP)
        self.assertEqual(self.login_reply(server, "bob", "bob pw"), AUTH_TEMP)
        self.assert_stats(server, hits=0, misses=misses + 2, stale_hits=1)

        # After stale_ttl_s Redis has forgotten the success...
        self.assertTrue(poll(lambda: server.redis.command("EXISTS", key) == 0,
                             stale_ttl_s + BOUND_S, 0.1))
        self.assertEqual(self.login_reply(server, "alice", "alice pw"), AUTH_TEMP)
        self.assert_stats(server, hits=0, misses=misses + 3, stale_hits=1)
        # ...and none of those [SYS/TEMP] answers was kept.
        self.assertEqual(self.cache_entries(server.redis, server.redis_prefix), {})
        cluster.start_again()
        # The postgres module finds PostgreSQL back in the background.
        self.assertTrue(poll(lambda: self.login_reply(server, "bob", "bob pw")
                             .startswith("+OK"), BOUND_S))
        self.assert_logs_in(server, "alice", "alice pw")


# ---- 4. Negative entries ----------------------------------------------------


class Negative(RedisCacheTestCase):
    def test_a_wrong_password_is_cached_for_negative_ttl_s(self):
        negative_ttl_s = 3
        server = self.cached_server(start=False, negative_ttl_s=negative_ttl_s)
        self.add_user(server, "alice", "alice pw")
        server.start()
        self.assertEqual(self.login_reply(server, "alice", "guess"), AUTH_FAILED)
        self.assertEqual(self.login_reply(server, "alice", "guess"), AUTH_FAILED)
        self.assert_stats(server, hits=1, misses=1)
        self.assertIn("(cached)", server.stderr_text())
        # The right password right after is another entry: no lock-out.
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_stats(server, hits=1, misses=2)

        # The guess becomes the password: the cache still says no, until
        # negative_ttl_s is over.
        failures = [k for k, v in self.cache_entries(server.redis, server.redis_prefix)
                    .items() if v.startswith(b"fail ")]
        self.assertEqual(len(failures), 1)
        self.assertLessEqual(server.redis.command("TTL", failures[0]), negative_ttl_s)
        self.set_password(server, "alice", "guess")
        self.assertEqual(self.login_reply(server, "alice", "guess"), AUTH_FAILED)
        self.assert_stats(server, hits=2, misses=2)
        self.assertTrue(poll(lambda: server.redis.command("EXISTS", failures[0]) == 0,
                             negative_ttl_s + BOUND_S, 0.1))
        self.assert_logs_in(server, "alice", "guess")
        self.assert_stats(server, hits=2, misses=3)


# ---- 5. Redis away ----------------------------------------------------------


class RedisAway(RedisCacheTestCase):
    def server_with_own_redis(self, **cache_settings):
        """A Redis of the test's own, and a popkitd whose alice has logged
        in twice (a miss, then a hit)."""
        redis = self.private_redis()
        server = self.cached_server(redis, start=False, **cache_settings)
        self.add_user(server, "alice", "alice pw")
        server.start()
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_stats(server, hits=1, misses=1)
        return redis, server

    def test_redis_stopped_and_started_again(self):
        redis, server = self.server_with_own_redis()
        unreachable = UNREACHABLE_LINE % redis.address
        reachable = REACHABLE_LINE % redis.address
        redis.stop()
        for _ in range(5):
            self.assert_logs_in(server, "alice", "alice pw")
        self.assertEqual(self.login_reply(server, "alice", "guess"), AUTH_FAILED)
        self.assert_stats(server, hits=1, misses=1, fall_throughs=6)
        log = server.stderr_text()
        self.assertEqual(log.count(unreachable), 1, log)
        self.assertNotIn(reachable, log)

        redis.start_again()
        self.assertTrue(server.wait_for_log(reachable, BOUND_S), server.stderr_text())
        # The new Redis is empty: a miss, then hits again.
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_stats(server, hits=2, misses=2, fall_throughs=6)
        self.assertEqual(server.stderr_text().count(unreachable), 1)

    def test_a_redis_that_wants_a_password(self):
        redis = self.private_redis()
        redis.command("CONFIG", "SET", "requirepass", "sekrit")
        # Without it: every login goes to PostgreSQL, and the log says why.
        server = self.cached_server(redis, start=False)
        self.add_user(server, "alice", "alice pw")
        server.start()
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_stats(server, hits=0, fall_throughs=2)
        self.assertIn("Redis refused PING: NOAUTH", server.stderr_text())
        # With it: the cache works.
        other = self.cached_server(redis, start=False, password="sekrit")
        self.add_user(other, "bob", "bob pw")
        other.start()
        self.assert_logs_in(other, "bob", "bob pw")
        self.assert_logs_in(other, "bob", "bob pw")
        self.assert_stats(other, hits=1, misses=1, fall_throughs=0)
        self.assertNotIn("refused", other.stderr_text())

    def test_redis_hangs_and_comes_back(self):
        redis, server = self.server_with_own_redis(timeout_ms=TIMEOUT_MS)
        unreachable = UNREACHABLE_LINE % redis.address
        reachable = REACHABLE_LINE % redis.address
        redis.pause()
        for i in range(4):
            if i > 0:
                # Time for popkitd to try Redis again in the background
                # (100 ms after the first failure, then longer).
                time.sleep(0.4)
            with self.subTest(login=i):
                c = server.raw()
                self.addCleanup(c.close)
                self.assertEqual(c.cmd("USER alice"), "+OK Send PASS.")
                started = time.monotonic()
                reply = c.cmd("PASS alice pw")
                waited = time.monotonic() - started
                self.assertTrue(reply.startswith("+OK Logged in"), reply)
                # At most timeout_ms for Redis, plus PostgreSQL's answer.
                self.assertLess(waited, TIMEOUT_MS / 1000 + 1.0)
                self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")
        self.assert_stats(server, hits=1, misses=1, fall_throughs=4)
        log = server.stderr_text()
        # A hung Redis still completes TCP handshakes (the kernel does
        # that): it is not back until it answers.
        self.assertNotIn(reachable, log)
        self.assertEqual(log.count(unreachable), 1, log)

        redis.resume()
        self.assertTrue(server.wait_for_log(reachable, BOUND_S), server.stderr_text())
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_stats(server, hits=2, misses=1, fall_throughs=4)
        # The connections popkitd gave up on are closed: Redis has one
        # client of popkitd's left (and this one asking).
        self.assertTrue(poll(lambda: clients(redis) == 2, BOUND_S),
                        redis.command("CLIENT", "LIST"))
        # And the operator reads why Redis was given up.
        self.assertIn("%s: no answer within %d ms (timeout_ms)" % (unreachable, TIMEOUT_MS),
                      log)


def clients(redis) -> int:
    info = redis.command("INFO", "clients").decode()
    return int(re.search(r"connected_clients:(\d+)", info).group(1))


# ---- 6. --check-config ------------------------------------------------------


class CheckConfig(RedisCacheTestCase):
    def check(self, server, auth=None, store=None):
        changes = {}
        if auth is not None:
            changes["auth"] = [auth]
        if store is not None:
            changes["store"] = store
        return server.check_config(**changes)

    def test_check_config_names_the_bad_key(self):
        server = self.make_server(start=False, store="maildir")
        passwd = {"module": "passwd-file", "path": server.users_path}
        maildir = {"module": "maildir", "path": os.path.join(server.mail_root, "%u")}
        # Redis is nowhere: --check-config does not connect.
        address = "127.0.0.1:%d" % popkit_harness.free_port()

        def cache(**settings):
            return dict(redis_cache_entry(passwd, address, "check:"), **settings)

        code, stderr = self.check(server, auth=cache(ttl_s=10, stale_ttl_s=10,
                                                     secret="s" * 16),
                                  store=redis_cache_entry(maildir, address, "check:"))
        self.assertEqual(code, 0, stderr)
        cases = [
            ("address", cache(address="127.0.0.1")),
            ("address", cache(address="localhost:99999")),
            ("stale_ttl_s", cache(ttl_s=60, stale_ttl_s=59)),
            ("secret", cache(secret="s" * 15)),
            ("ttl_s", cache(ttl_s=0)),
            ("$.auth[0]", {"module": "redis-cache", "address": address}),
            ("$.auth[0].next", dict(passwd, next=dict(passwd))),
        ]
        for key, auth in cases:
            with self.subTest(key=key, auth=auth):
                code, stderr = self.check(server, auth=auth)
                self.assertEqual(code, 1, stderr)
                # The error is the last line (next, made first, may log);
                # it names the key itself, not a longer one ending with it.
                self.assertRegex(stderr.strip().splitlines()[-1],
                                 r"^popkitd: .*[ (]%s: " % re.escape(key))
        code, stderr = self.check(server, store={"module": "redis-cache",
                                                 "address": address})
        self.assertEqual(code, 1, stderr)
        self.assertIn("$.store:", stderr)
        self.assertIn('needs "next"', stderr)
        code, stderr = self.check(server, store=dict(maildir, next=dict(maildir)))
        self.assertEqual(code, 1, stderr)
        self.assertIn("$.store.next:", stderr)
        self.assertIn("not a decorator", stderr)


if __name__ == "__main__":
    run_tests()
