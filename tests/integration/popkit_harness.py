"""Shared helpers for popkit's integration tests.

Every test here runs the real popkitd binary built by CMake against real
files: a passwd-file with {PLAIN} and crypt(3) hashes, and maildirs written
the way an MTA writes them (LF line ends, files in new/ and cur/). ctest
hands us the paths of the binaries and module directories in the
environment (see tests/integration/CMakeLists.txt).

With POPKIT_TEST_STORE=postgres in the environment (ctest's *-postgres
tests) the same tests run against the postgres module instead: users and
mail go into a fresh database of a real PostgreSQL that the first server
of the test process starts (pg_cluster.py), the way an admin or an import
script would write them. Tests about maildir files themselves are marked
@maildir_only.

With POPKIT_TEST_CACHE=redis (ctest's *-redis tests), or
PopkitServer(cache="redis"), the auth entry and the store of the default
config are wrapped in the redis-cache decorator, in front of a real Redis
that the first such server of the test process starts (redis_server.py).
Every server gets a key_prefix of its own, so servers of one process never
see each other's cache. POPKIT_TEST_CACHE_LOCK=1 (or
PopkitServer(cache="redis", cache_lock=True)) also turns on the store's
Redis lock, and with it the listing cache.

The harness checks on every shutdown what a user would check on a real
server: SIGTERM makes popkitd exit 0, and nothing in its stderr comes from
AddressSanitizer or UBSan (the suite also runs against sanitizer builds).
When a test fails, popkitd's stderr is printed so the failure can be read
without re-running anything.
"""

import base64
import copy
import hashlib
import hmac
import json
import os
import poplib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import warnings

from pg_cluster import PostgresCluster
from server_process import free_port  # noqa: F401 (tests import it from here)
from redis_server import RedisServer

with warnings.catch_warnings():
    # crypt is deprecated since 3.11 but still the stdlib's only door to
    # libxcrypt, which is what passwd-file verifies hashes with.
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

POPKITD = os.environ.get("POPKITD")
POPKIT_DELIVER = os.environ.get("POPKIT_DELIVER")
POPKIT_PASSWD = os.environ.get("POPKIT_PASSWD")
MODULES_DIR = os.environ.get("POPKIT_MODULES_DIR")
TEST_MODULES_DIR = os.environ.get("POPKIT_TEST_MODULES_DIR")

# Where users and mail live: "maildir" (passwd-file and maildir) or
# "postgres" (the postgres module for both roles).
STORES = ("maildir", "postgres")
STORE = os.environ.get("POPKIT_TEST_STORE") or "maildir"

# What stands in front of the auth and store modules: "none", or "redis"
# (redis-cache wrapping each of them).
CACHES = ("none", "redis")
CACHE = os.environ.get("POPKIT_TEST_CACHE") or "none"
# In cache mode: whether the store's redis-cache locks mailboxes in Redis
# ("lock": true), which also caches listings.
CACHE_LOCK = os.environ.get("POPKIT_TEST_CACHE_LOCK") == "1"

# The line redis-cache writes when it finds Redis away (% the address): a
# server in cache mode must never write it, or the run tested the
# fall-through, not the cache.
REDIS_UNREACHABLE_LINE = "Redis at %s is unreachable"
CACHE_MODE_REDIS_TIMEOUT_MS = 5000

# popkit-deliver writes messages in pieces of this size; add_message too.
PG_CHUNK_BYTES = 64 * 1024
# Writes queued before popkitd starts go to psql in batches of about this
# much SQL or this many psql variables (argv has room for many more).
PG_BATCH_BYTES = 32 << 20
PG_BATCH_VARIABLES = 2000

SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")

# How long to wait for popkitd to come up or go down. Sanitizer builds are
# several times slower than plain ones, so these are generous; a healthy
# server answers in milliseconds.
START_TIMEOUT_S = 20
STOP_GRACE_S = 15

# poplib refuses lines longer than this by default; our 6 MB message has
# short lines, but give it room anyway.
poplib._MAXLINE = 1 << 20


def require_environment():
    """Fail loudly (not skip) when run outside ctest without the paths."""
    if STORE not in STORES:
        raise RuntimeError("POPKIT_TEST_STORE=%s: expected one of %s" %
                           (STORE, ", ".join(STORES)))
    if CACHE not in CACHES:
        raise RuntimeError("POPKIT_TEST_CACHE=%s: expected one of %s" %
                           (CACHE, ", ".join(CACHES)))
    if os.environ.get("POPKIT_TEST_CACHE_LOCK") not in (None, "", "0", "1"):
        raise RuntimeError("POPKIT_TEST_CACHE_LOCK=%s: expected 0 or 1" %
                           os.environ.get("POPKIT_TEST_CACHE_LOCK"))
    missing = [
        name
        for name in ("POPKITD", "POPKIT_DELIVER", "POPKIT_PASSWD",
                     "POPKIT_MODULES_DIR", "POPKIT_TEST_MODULES_DIR")
        if not os.environ.get(name)
    ]
    if missing:
        raise RuntimeError(
            "integration tests need the environment variables %s; run them "
            "through ctest, or set them by hand" % ", ".join(missing))


def maildir_only(reason: str):
    """Skip a test in the postgres runs: for tests about maildir files
    themselves (their names, paths, directories), which the postgres
    store does not have. reason says what the test is about."""
    return unittest.skipIf(STORE == "postgres", "about maildir files: " + reason)


# ---- Expected bytes, computed independently of popkitd -------------------


def crlf_form(raw: bytes) -> bytes:
    """The message as a POP3 client must receive it (before dot-stuffing).

    RFC 1939 transfers lines ending in CRLF. Every LF that is not already
    preceded by CR becomes CRLF, a CR on its own stays, and a message that
    does not end with a newline gets a final CRLF so its last line is a
    line. STAT and LIST report the length of exactly these bytes.
    """
    out = bytearray()
    previous = None
    for byte in raw:
        if byte == 0x0A and previous != 0x0D:
            out += b"\r\n"
        else:
            out.append(byte)
        previous = byte
    if raw and not raw.endswith(b"\n"):
        out += b"\r\n"
    return bytes(out)


def dot_stuff(form: bytes) -> bytes:
    """Byte-stuff lines that start with '.', as RFC 1939 section 3 says."""
    lines = form.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line
                        for line in lines)


def wire_body(raw: bytes) -> bytes:
    """What follows "+OK ..." on the wire for RETR, terminator included."""
    return dot_stuff(crlf_form(raw)) + b".\r\n"


def expected_top(raw: bytes, body_lines: int) -> bytes:
    """The CRLF form of the header, the blank line and n body lines."""
    form = crlf_form(raw)
    lines = form.split(b"\r\n")[:-1]
    if b"" not in lines:
        return form
    header_end = lines.index(b"")
    kept = lines[:header_end + 1 + body_lines]
    return b"".join(line + b"\r\n" for line in kept)


def big_message(megabytes: int = 6) -> bytes:
    """A message of several megabytes with short lines, some starting with
    a dot, so every chunk boundary of the server's encoder gets crossed."""
    header = (b"From: big@test.local\nTo: alice@test.local\n"
              b"Subject: a big one\nMessage-ID: <big@test.local>\n\n")
    target = megabytes * 1024 * 1024
    lines = []
    size = len(header)
    i = 0
    while size < target:
        if i % 97 == 0:
            line = b".%08d dotted line ..........................................\n" % i
        else:
            line = b"%08d abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\n" % i
        lines.append(line)
        size += len(line)
        i += 1
    return header + b"".join(lines)


def special_messages():
    """The messages every client test downloads, in mailbox order.

    Each one exercises a rule of the CRLF/dot-stuffing encoder; the last is
    several megabytes so memory bounds and backpressure are exercised too.
    """
    return [
        ("dots",
         b"From: a@test.local\nTo: alice@test.local\nSubject: dots\n\n"
         b".\n..\n.x\n...\n. \nend\n"),
        ("no-final-newline",
         b"From: a@test.local\nTo: alice@test.local\n"
         b"Subject: no final newline\n\nfirst line\nlast line without newline"),
        ("crlf-already",
         b"From: a@test.local\r\nTo: alice@test.local\r\n"
         b"Subject: crlf already\r\n\r\nline one\r\n.\r\nline three\r\n"),
        ("utf8",
         "From: Jürgen <j@test.local>\nTo: alice@test.local\n"
         "Subject: Grüße 日本語\n\nÄÖÜ äöü ß – “quotes” – 🎉\n.ünïcödé\n"
         .encode("utf-8")),
        ("mixed-line-ends",
         b"From: a@test.local\nTo: alice@test.local\nSubject: mixed\r\n\n"
         b"lf line\ncrlf line\r\nlf again\n"),
        ("big", big_message(6)),
    ]


# ---- Passwords ------------------------------------------------------------


def scram_sha256_secret(password: str, salt: bytes = None,
                        iterations: int = 4096) -> str:
    """The stored form RFC 5802 section 3 defines, computed here rather
    than by popkit-passwd so the server is checked against an independent
    derivation: {SCRAM-SHA-256}ITERATIONS,SALT,STOREDKEY,SERVERKEY."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    return "{SCRAM-SHA-256}%d,%s,%s,%s" % (
        iterations, *(base64.b64encode(v).decode() for v in (salt, stored_key, server_key)))


def hash_password(password: str, scheme: str = "plain") -> str:
    """A passwd-file hash of password in the given scheme."""
    if scheme == "plain":
        return "{PLAIN}" + password
    if scheme == "scram-sha-256":
        return scram_sha256_secret(password)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if scheme == "sha512":
            salt = crypt.mksalt(crypt.METHOD_SHA512)
        elif scheme == "sha256":
            salt = crypt.mksalt(crypt.METHOD_SHA256)
        elif scheme == "bcrypt":
            salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)
        elif scheme == "yescrypt":
            # mksalt cannot make yescrypt settings; libxcrypt accepts this
            # one (cost j9T is libxcrypt's default).
            salt = "$y$j9T$" + crypt.mksalt(crypt.METHOD_SHA512)[3:19]
        else:
            raise ValueError(scheme)
        hashed = crypt.crypt(password, salt)
    if not hashed or hashed.startswith("*"):
        raise RuntimeError("libxcrypt refused scheme %s" % scheme)
    return hashed


# ---- Networking -----------------------------------------------------------


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# ---- TLS ------------------------------------------------------------------


def make_certificate(directory: str, name: str = "server",
                     common_name: str = "popkit test", extra_ip=None) -> tuple:
    """A self-signed EC certificate for 127.0.0.1 and localhost (and
    extra_ip), made with openssl as an admin would; returns
    (certificate_path, key_path). Being self-signed, the certificate is
    also the CA file clients trust."""
    names = "IP:127.0.0.1,DNS:localhost"
    if extra_ip not in (None, "127.0.0.1"):
        names += ",IP:" + extra_ip
    os.makedirs(directory, exist_ok=True)
    certificate = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", certificate, "-days", "2",
         "-subj", "/CN=" + common_name,
         "-addext", "subjectAltName=" + names],
        check=True, capture_output=True, timeout=60)
    return certificate, key


def client_ssl_context(cafile: str) -> ssl.SSLContext:
    """What a careful client uses: verify the chain against cafile and the
    name against the certificate."""
    return ssl.create_default_context(cafile=cafile)


class ConnectionClosed(Exception):
    pass


class RawClient:
    """A POP3 connection at the byte level, for what poplib hides:
    exact wire bytes, pipelining, malformed commands, the server closing."""

    def __init__(self, host: str, port: int, timeout: float = 10.0,
                 ssl_context=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if ssl_context is not None:
            # Implicit TLS (POP3S): the handshake comes before the greeting.
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname=host)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def starttls(self, ssl_context, server_hostname="localhost") -> None:
        """The handshake after "+OK" to STLS (RFC 2595). Bytes the server
        sent in clear after that "+OK" would be lost here, so their
        presence is an error."""
        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            early = self.file.peek(1)
        except BlockingIOError:
            early = b""
        finally:
            self.sock.settimeout(timeout)
        if early:
            raise AssertionError("cleartext after the STLS reply: %r" % early)
        self.file.close()  # the socket itself stays open
        self.sock = ssl_context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def line_bytes(self) -> bytes:
        """One line with its CRLF; ConnectionClosed at end of stream."""
        data = self.file.readline()
        if not data:
            raise ConnectionClosed("server closed the connection")
        return data

    def line(self) -> str:
        data = self.line_bytes()
        if not data.endswith(b"\r\n"):
            raise AssertionError("line does not end with CRLF: %r" % data)
        return data[:-2].decode("utf-8", "surrogateescape")

    def cmd(self, command) -> str:
        """Send one command line and return the status line."""
        if isinstance(command, str):
            command = command.encode("utf-8")
        self.send(command + b"\r\n")
        return self.line()

    def multiline_wire(self) -> bytes:
        """The body of a multi-line reply exactly as sent, up to and
        including the ".\\r\\n" terminator."""
        parts = []
        while True:
            data = self.line_bytes()
            parts.append(data)
            if data == b".\r\n":
                return b"".join(parts)

    def multiline(self) -> list:
        """The lines of a multi-line reply, unstuffed, without CRLF."""
        wire = self.multiline_wire()
        lines = wire[:-3].split(b"\r\n")[:-1] if wire != b".\r\n" else []
        return [l[1:] if l.startswith(b".") else l for l in lines]

    def read_exactly(self, size: int) -> bytes:
        """size bytes of the stream, fast (for replies of many MB)."""
        data = self.file.read(size)
        if len(data) != size:
            raise ConnectionClosed("closed after %d of %d bytes" % (len(data), size))
        return data

    def login(self, user: str, password: str) -> None:
        reply = self.cmd("USER " + user)
        if not reply.startswith("+OK"):
            raise AssertionError("USER %s: %s" % (user, reply))
        reply = self.cmd("PASS " + password)
        if not reply.startswith("+OK"):
            raise AssertionError("PASS for %s: %s" % (user, reply))

    def wait_closed(self, timeout: float = 10.0) -> bytes:
        """Read until the server closes; return what came before. Fails
        when the connection is still open after timeout seconds."""
        self.sock.settimeout(timeout)
        rest = b""
        try:
            while True:
                data = self.file.read1(65536)
                if not data:
                    return rest
                rest += data
        except socket.timeout:
            raise AssertionError(
                "connection still open after %.1f s (got %r)" % (timeout, rest))
        except ConnectionResetError:
            return rest

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Drop the connection without QUIT (and without lingering)."""
        self.close()


# ---- The server -----------------------------------------------------------


def _merge(base: dict, extra: dict) -> dict:
    """Deep-merge extra into a copy of base; None values delete keys."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_shared_pg_cluster = None
_pg_database_seq = 0


def shared_pg_cluster() -> PostgresCluster:
    """The PostgreSQL of this test process, started on first use and
    shared by every server of the process (each has its own database)."""
    global _shared_pg_cluster
    if _shared_pg_cluster is None:
        cluster = PostgresCluster()
        cluster.start()
        _shared_pg_cluster = cluster
    return _shared_pg_cluster


_shared_redis_server = None
_redis_prefix_seq = 0


def shared_redis_server() -> RedisServer:
    """The Redis of this test process, started on first use and shared by
    every server of the process (each has its own key_prefix)."""
    global _shared_redis_server
    if _shared_redis_server is None:
        server = RedisServer()
        server.start()
        _shared_redis_server = server
    return _shared_redis_server


def redis_cache_entry(entry: dict, address: str, prefix: str, **settings) -> dict:
    """entry (an auth or store module object) wrapped in redis-cache."""
    return dict({"module": "redis-cache", "address": address, "key_prefix": prefix,
                 "next": entry}, **settings)


class PopkitServer:
    """One popkitd in its own temporary directory.

    Layout: DIR/users (passwd-file), DIR/mail/<user>/{new,cur,tmp},
    DIR/popkit.json, DIR/popkitd.stderr. Config overrides are deep-merged
    into the default config, so a test names only what it changes.

    store (default: POPKIT_TEST_STORE, else "maildir") says where users
    and mail live. With "postgres", self.pg is the process's PostgreSQL,
    self.pg_db this server's own database in it and self.conninfo what
    popkitd connects with; add_user, add_message and message_files work
    on that database.

    cache (default: POPKIT_TEST_CACHE, else "none"): with "redis", the
    default auth entry and store are wrapped in redis-cache; self.redis is
    the process's Redis and self.redis_prefix the key_prefix of this
    server's keys in it. cache_lock (default: POPKIT_TEST_CACHE_LOCK=1)
    adds "lock": true to the store's redis-cache entry.
    """

    def __init__(self, config=None, modules_dir=None, host="127.0.0.1", env=None,
                 tls=False, store=None, cache=None, cache_lock=None):
        require_environment()
        self.store = store or STORE
        if self.store not in STORES:
            raise ValueError("store %r: expected one of %s" % (self.store, ", ".join(STORES)))
        self.cache = cache or CACHE
        if self.cache not in CACHES:
            raise ValueError("cache %r: expected one of %s" % (self.cache, ", ".join(CACHES)))
        self.cache_lock = CACHE_LOCK if cache_lock is None else cache_lock
        self.redis = self.redis_prefix = None
        if self.cache == "redis":
            global _redis_prefix_seq
            _redis_prefix_seq += 1
            self.redis = shared_redis_server()
            self.redis_prefix = "popkit-it-%d-%d:" % (os.getpid(), _redis_prefix_seq)
        self.pg = self.pg_db = self.conninfo = None
        if self.store == "postgres":
            global _pg_database_seq
            _pg_database_seq += 1
            self.pg = shared_pg_cluster()
            self.pg_db = "popkit_it_%d" % _pg_database_seq
            self.conninfo = self.pg.create_database(self.pg_db)
        self.dir = tempfile.mkdtemp(prefix="popkit-it-")
        self.users_path = os.path.join(self.dir, "users")
        self.mail_root = os.path.join(self.dir, "mail")
        os.mkdir(self.mail_root)
        self.config_path = os.path.join(self.dir, "popkit.json")
        self.stderr_path = os.path.join(self.dir, "popkitd.stderr")
        self.stdout_path = os.path.join(self.dir, "popkitd.stdout")
        self.modules_dir = modules_dir or MODULES_DIR
        self.env = dict(os.environ, **(env or {}))
        self.host = host
        self.port = free_port(host)
        self.users = []
        self._message_seq = 0
        self._pending_sql = []
        self._pending_variables = {}
        self._pending_bytes = 0
        self.process = None
        self.returncode = None
        self.start_failed = False
        self.certificate = self.key = self.stls_port = self.tls_port = None
        base = self.default_config()
        if tls:
            base = _merge(base, self._tls_config())
        self.config = _merge(base, config or {})
        self._write_users()

    def _tls_config(self) -> dict:
        """With tls=True: a certificate in DIR/tls (self.certificate, also
        the clients' CA file), and beside the plain listener on self.port a
        STARTTLS one on self.stls_port and a POP3S one on self.tls_port."""
        self.certificate, self.key = make_certificate(os.path.join(self.dir, "tls"),
                                                      extra_ip=self.host)
        ports = {self.port}
        while len(ports) < 3:
            ports.add(free_port(self.host))
        self.stls_port, self.tls_port = sorted(ports - {self.port})
        return {
            "listen": [{"address": self.host, "port": self.port},
                       {"address": self.host, "port": self.stls_port,
                        "tls": "starttls"},
                       {"address": self.host, "port": self.tls_port,
                        "tls": "implicit"}],
            "tls": {"certificate": self.certificate, "key": self.key},
        }

    def ssl_context(self) -> ssl.SSLContext:
        return client_ssl_context(self.certificate)

    def default_config(self) -> dict:
        if self.store == "postgres":
            auth = [{"module": "postgres", "conninfo": self.conninfo}]
            store = {"module": "postgres", "conninfo": self.conninfo}
        else:
            auth = [{"module": "passwd-file", "path": self.users_path}]
            store = {"module": "maildir", "path": os.path.join(self.mail_root, "%u")}
        if self.cache == "redis":
            # The suites in cache mode test the sessions through the cache
            # and fail if popkitd ever finds Redis away; the default 250 ms
            # is too short for Redis on a loaded CI machine under ASan
            # (test_redis_cache tests the timeout itself).
            patient = {"timeout_ms": CACHE_MODE_REDIS_TIMEOUT_MS}
            auth = [redis_cache_entry(entry, self.redis.address, self.redis_prefix, **patient)
                    for entry in auth]
            lock = {"lock": True} if self.cache_lock else {}
            store = redis_cache_entry(store, self.redis.address, self.redis_prefix,
                                      **patient, **lock)
        return {
            "hostname": "test.local",
            "workers": 2,
            "listen": [{"address": self.host, "port": self.port}],
            "auth": auth,
            "store": store,
            "limits": {
                "max_line_bytes": 8192,
                "login_timeout_s": 60,
                "idle_timeout_s": 600,
                "max_bad_commands": 10,
                "shutdown_timeout_s": 30,
                "output_buffer_bytes": 65536,
            },
            "log": {"level": "info"},
            "plaintext_auth": "tls-or-loopback",
            "apop": False,
        }

    # -- users and mail --

    def add_user(self, name: str, password: str, scheme: str = "plain"):
        hashed = hash_password(password, scheme)
        self.users.append((name, hashed))
        self._write_users()
        if self.store == "postgres":
            # mailbox NULL: the user reads the mailbox of the same name.
            self._write_sql("INSERT INTO popkit.users (name, password)"
                            " VALUES (:'name{n}', :'password{n}');",
                            name=name, password=hashed)

    def sql(self, sql: str, **variables) -> list:
        """Run sql in this server's database (postgres store) after the
        writes still queued; values only as psql variables, as in
        PostgresCluster.psql."""
        if self.pg is None:
            raise AssertionError("server.sql() needs the postgres store")
        self.flush_sql()
        return self.pg.psql(self.pg_db, sql, **variables)

    def _write_sql(self, template: str, tail: str = "", **variables):
        """Write users or mail. Until popkitd runs, writes are queued and
        sent in one psql run by flush_sql() (at the latest when the config
        is written), so a pool of 140 users with 700 messages costs one
        psql start rather than 840. template's psql variables are written
        :'NAME{n}'; tail is more SQL, sent as it is."""
        suffix = "_%d" % len(self._pending_sql)
        self._pending_sql.append(template.replace("{n}", suffix) + tail)
        self._pending_variables.update((key + suffix, value)
                                       for key, value in variables.items())
        self._pending_bytes += len(template) + len(tail)
        if (self.process is not None or self._pending_bytes > PG_BATCH_BYTES
                or len(self._pending_variables) > PG_BATCH_VARIABLES):
            self.flush_sql()

    def flush_sql(self):
        """Send the queued writes (see _write_sql)."""
        if not self._pending_sql:
            return
        script, variables = "\n".join(self._pending_sql), self._pending_variables
        self._pending_sql, self._pending_variables, self._pending_bytes = [], {}, 0
        self.pg.psql(self.pg_db, script, **variables)

    def _write_users(self):
        lines = ["# written by popkit_harness.py"]
        lines += ["%s:%s" % (name, hashed) for name, hashed in self.users]
        tmp = self.users_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.users_path)

    def maildir(self, user: str) -> str:
        """The maildir of a user whose name is a plain path component."""
        return os.path.join(self.mail_root, user)

    def make_maildir(self, path: str) -> str:
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        return path

    def add_message(self, user, raw: bytes, name=None, subdir="new",
                    maildir=None) -> str:
        """Store raw as one message, as an MTA would; returns the file name.

        Generated names start with an increasing timestamp, so mailbox
        order is the order of add_message calls.

        With the postgres store the message goes into the mailbox named
        user and its unique id is name up to ":" (subdir means nothing
        there); that unique id is returned, as message_files lists it.
        """
        if name is None:
            self._message_seq += 1
            name = "%d.M%dP%d.test.local" % (1700000000 + self._message_seq,
                                             self._message_seq, os.getpid())
        if self.store == "postgres":
            if maildir is not None or user is None:
                raise ValueError("the postgres store has mailboxes, not maildirs")
            uid = name.split(":")[0]
            self._insert_message(user, uid, raw)
            return uid
        path = self.make_maildir(maildir or self.maildir(user))
        tmp = os.path.join(path, "tmp", name.split(":")[0])
        with open(tmp, "wb") as f:
            f.write(raw)
        os.rename(tmp, os.path.join(path, subdir, name))
        return name

    def _insert_message(self, mailbox: str, uid: str, raw: bytes):
        """One message in one transaction, the bytes as 64 KiB chunks in
        hex on psql's stdin (argv could not take a 6 MB message)."""
        head = ("BEGIN;\n"
                "INSERT INTO popkit.mailboxes (name) VALUES (:'mailbox{n}')"
                " ON CONFLICT (name) DO NOTHING;\n"
                "INSERT INTO popkit.messages (mailbox_id, uid, size)"
                " SELECT id, :'uid{n}', :'size{n}'::bigint FROM popkit.mailboxes"
                " WHERE name = :'mailbox{n}' RETURNING id AS message_id \\gset\n")
        chunks = "".join(
            "INSERT INTO popkit.message_chunks (message_id, start, data)"
            " VALUES (:message_id, %d, decode('%s', 'hex'));\n" % (
                start, raw[start:start + PG_CHUNK_BYTES].hex())
            for start in range(0, len(raw), PG_CHUNK_BYTES))
        self._write_sql(head, chunks + "COMMIT;",
                        mailbox=mailbox, uid=uid, size=len(crlf_form(raw)))

    def message_files(self, user, maildir=None) -> list:
        """Base names of the files in new/ and cur/, sorted. With the
        postgres store: the unique ids in the mailbox named user, sorted."""
        if self.store == "postgres":
            if maildir is not None:
                raise ValueError("the postgres store has mailboxes, not maildirs")
            rows = self.sql("SELECT m.uid FROM popkit.messages m"
                            " JOIN popkit.mailboxes b ON b.id = m.mailbox_id"
                            " WHERE b.name = :'mailbox';", mailbox=user)
            return sorted(uid for uid, in rows)
        path = maildir or self.maildir(user)
        names = []
        for sub in ("new", "cur"):
            full = os.path.join(path, sub)
            if os.path.isdir(full):
                names += [n for n in os.listdir(full) if not n.startswith(".")]
        return sorted(names)

    # -- config and process --

    def write_config(self) -> str:
        if self.pg is not None:
            self.flush_sql()  # users and mail are there before popkitd or popkit-deliver
        with open(self.config_path, "w", encoding="utf-8") as f:
            json.dump(self.config, f, indent=2, ensure_ascii=False)
        return self.config_path

    def check_config(self, **changes) -> tuple:
        """popkitd --check-config on this server's config with these
        top-level keys replaced (written to check.json beside it): (exit
        code, stderr). A sanitizer report on stderr fails the test."""
        path = os.path.join(self.dir, "check.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dict(self.config, **changes), f)
        result = subprocess.run([POPKITD, "-c", path, "--check-config", "--modules-dir",
                                 self.modules_dir], capture_output=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        stderr = result.stderr.decode("utf-8", "replace")
        for marker in SANITIZER_MARKERS:
            if marker in stderr:
                raise AssertionError("popkitd --check-config's stderr holds %r:\n%s" %
                                     (marker, stderr))
        return result.returncode, stderr

    def command(self, *extra) -> list:
        return [POPKITD, "-c", self.config_path, "--modules-dir",
                self.modules_dir] + list(extra)

    def start(self, wait=True):
        self.write_config()
        self._stderr = open(self.stderr_path, "wb")
        self._stdout = open(self.stdout_path, "wb")
        self.process = subprocess.Popen(self.command(), stdout=self._stdout,
                                        stderr=self._stderr,
                                        stdin=subprocess.DEVNULL, env=self.env)
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, host=None, port=None):
        host = host or self.host
        port = port or self.port
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                self.start_failed = True
                raise AssertionError(
                    "popkitd exited with %d before listening:\n%s" %
                    (self.process.returncode, self.stderr_text()))
            try:
                probe = socket.create_connection((host, port), timeout=1)
                probe.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        "popkitd does not accept on %s port %d after %d s:\n%s" %
                        (host, port, START_TIMEOUT_S, self.stderr_text()))
                time.sleep(0.05)

    def rss_kib(self) -> int:
        """popkitd's resident memory, from /proc."""
        with open("/proc/%d/status" % self.process.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/%d/status" % self.process.pid)

    def stderr_text(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.stderr_text():
                return True
            time.sleep(0.05)
        return needle in self.stderr_text()

    def wait_for_log_count(self, needle: str, count: int, timeout: float = 10.0) -> bool:
        """Whether needle is in the log count times (or more) within
        timeout seconds: for the next occurrence of a line already seen."""
        deadline = time.monotonic() + timeout
        while self.stderr_text().count(needle) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def signal(self, signum=signal.SIGTERM):
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            self.returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                "popkitd still running %.0f s after SIGTERM:\n%s" %
                (timeout, self.stderr_text()))
        finally:
            self._stderr.close()
            self._stdout.close()
        return self.returncode

    def stop(self):
        """SIGTERM, wait, and check what a clean shutdown looks like."""
        if self.process is None or self.start_failed:
            # A failed start was reported already; one report is enough.
            return
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        limit = self.config.get("limits", {}).get("shutdown_timeout_s", 30)
        code = self.wait_exit(limit + STOP_GRACE_S)
        self.check_exit(code)

    def check_exit(self, code: int):
        text = self.stderr_text()
        if code != 0:
            raise AssertionError(
                "popkitd exited with %d, expected 0 after SIGTERM:\n%s" %
                (code, text))
        for marker in SANITIZER_MARKERS:
            if marker in text:
                raise AssertionError("popkitd's stderr holds %r:\n%s" %
                                     (marker, text))
        if self.cache == "redis" and \
                REDIS_UNREACHABLE_LINE % self.redis.address in text:
            raise AssertionError("popkitd found Redis unreachable: the run went past "
                                 "the cache:\n%s\n---- redis.log ----\n%s" %
                                 (text, self.redis.log_text()))

    def cleanup(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        self._pending_sql = []
        if self.pg is not None and self.pg.running():
            # Big messages add up over a test file; the cluster goes at exit.
            self.pg.psql("postgres", 'DROP DATABASE IF EXISTS :"name" WITH (FORCE);',
                         name=self.pg_db)

    # -- clients --

    def raw(self, timeout: float = 10.0, host=None, port=None,
            ssl_context=None) -> RawClient:
        return RawClient(host or self.host, port or self.port, timeout,
                         ssl_context=ssl_context)

    def pop(self, user=None, password=None, timeout: float = 10.0):
        client = poplib.POP3(self.host, self.port, timeout=timeout)
        if user is not None:
            client.user(user)
            client.pass_(password)
        return client


# ---- unittest glue --------------------------------------------------------


def _test_failed(case: unittest.TestCase) -> bool:
    """Whether case (or one of its subtests) has failed so far.

    unittest resets its own success flag for every part it runs (setUp,
    the test, tearDown, each cleanup), so from inside a cleanup the only
    reliable record is the result's lists of failures and errors.
    """
    outcome = getattr(case, "_outcome", None)
    result = getattr(outcome, "result", None)
    if result is None:
        return False
    for test, _ in list(result.failures) + list(result.errors):
        if getattr(test, "test_case", test) is case:
            return True
    return False


class PopkitTestCase(unittest.TestCase):
    """Base class: make_server() gives a started popkitd that is stopped
    and checked after the test, its stderr printed if the test failed."""

    def make_server(self, config=None, start=True, **kwargs) -> PopkitServer:
        server = PopkitServer(config=config, **kwargs)
        self.addCleanup(self._finish_server, server)
        self.last_server = server
        if start:
            server.start()
        return server

    def _finish_server(self, server: PopkitServer):
        try:
            if _test_failed(self):
                sys.stderr.write(
                    "\n---- popkitd stderr (%s) ----\n%s---- end ----\n" %
                    (self.id(), server.stderr_text()))
                if server.pg is not None:
                    sys.stderr.write(
                        "---- postgres.log, last lines ----\n%s\n---- end ----\n" %
                        "\n".join(server.pg.log_text().splitlines()[-40:]))
                if server.redis is not None:
                    sys.stderr.write(
                        "---- redis.log, last lines ----\n%s\n---- end ----\n" %
                        "\n".join(server.redis.log_text().splitlines()[-20:]))
            server.stop()
        finally:
            server.cleanup()


class SharedServerTestCase(unittest.TestCase):
    """Base class for many small tests against one popkitd per class.

    Subclasses fill the server in populate(server) before it starts. The
    server is checked (exit 0, no sanitizer report) when the class ends,
    and every failed test prints the popkitd log lines written during it.
    """

    server = None
    config = None
    tls = False  # True: the server gets STARTTLS and POP3S listeners too

    @classmethod
    def populate(cls, server: PopkitServer):
        pass

    @classmethod
    def setUpClass(cls):
        cls.server = PopkitServer(config=cls.config, tls=cls.tls)
        try:
            cls.populate(cls.server)
            cls.server.start()
        except BaseException:
            sys.stderr.write(cls.server.stderr_text())
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    def setUp(self):
        self._log_start = len(self.server.stderr_text())

    def tearDown(self):
        if _test_failed(self):
            sys.stderr.write(
                "\n---- popkitd stderr during %s ----\n%s---- end ----\n" %
                (self.id(), self.server.stderr_text()[self._log_start:]))

    def raw(self, **kwargs) -> RawClient:
        client = self.server.raw(**kwargs)
        self.addCleanup(client.close)
        return client


def run_tests():
    """Entry point of every test file: verbose, exit status for ctest."""
    unittest.main(verbosity=2)
