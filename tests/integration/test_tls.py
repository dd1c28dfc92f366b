#!/usr/bin/env python3
"""TLS as users meet it: real clients over STARTTLS (STLS, RFC 2595) and
implicit TLS (POP3S) download a message and get exactly the stored bytes;
STLS keeps nothing from the cleartext part of the session; the protocol
versions and priorities popkitd accepts; configs it must refuse; and a
SIGHUP that swaps the certificate under running sessions.

The certificate is a self-signed EC one made by openssl for 127.0.0.1 and
localhost (popkit_harness.make_certificate); every client verifies it.
"""

import os
import poplib
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time

from popkit_harness import (START_TIMEOUT_S, PopkitServer, PopkitTestCase,
                            SharedServerTestCase, big_message, crlf_form,
                            make_certificate, run_tests, special_messages,
                            wire_body)
from test_clients import lf_form

CLIENT_TIMEOUT_S = 120
BEGIN_TLS = "+OK Begin TLS negotiation now."
HANDSHAKE_FAILED = "TLS handshake failed"

SCRAM_USER, SCRAM_PASSWORD = "demo", "scram pw"
PLAIN_USER, PLAIN_PASSWORD = "plainuser", "plain pw"
BIG_USER, BIG_PASSWORD = "big", "big pw"

# The small messages every client downloads (dots, no final newline,
# UTF-8...); the 6 MB one has its own mailbox.
MESSAGES = [raw for label, raw in special_messages() if label != "big"]


def run_client(argv, input_bytes=b"", env=None, cwd=None):
    """Runs a client to its end; returns the CompletedProcess."""
    return subprocess.run(argv, input=input_bytes, capture_output=True,
                          timeout=CLIENT_TIMEOUT_S, env=env, cwd=cwd)


def describe(result) -> str:
    return "exit %d\nstdout: %s\nstderr: %s" % (
        result.returncode, result.stdout[-3000:].decode("utf-8", "replace"),
        result.stderr[-3000:].decode("utf-8", "replace"))


def retr_from_transcript(transcript: bytes, raw: bytes) -> bytes:
    """The body of the RETR reply for raw in a client's transcript of the
    server's bytes, terminator included (what wire_body(raw) computes)."""
    status = b"+OK %d octets\r\n" % len(crlf_form(raw))
    start = transcript.find(status)
    if start < 0:
        raise AssertionError("no %r in the transcript:\n%r" % (status, transcript[-2000:]))
    start += len(status)
    # The dot-stuffed body never holds CRLF "." CRLF before its end.
    end = transcript.find(b"\r\n.\r\n", start - 2)
    if end < 0:
        raise AssertionError("the RETR reply has no terminator")
    return transcript[start:end + 5]


def der_of(pem_path: str) -> bytes:
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def openssl_s_client(port, *options, input_bytes=b"QUIT\r\n", cafile=None):
    """openssl s_client to 127.0.0.1:port, verifying the certificate and
    its IP address; -ign_eof so it reads until the server closes."""
    argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
            "-servername", "localhost", "-verify_return_error",
            "-verify_ip", "127.0.0.1", "-ign_eof"]
    if cafile is not None:
        argv += ["-CAfile", cafile]
    return run_client(argv + list(options), input_bytes)


class RecordClient:
    """TLS over a socket with the record boundaries in the test's hands
    (ssl.MemoryBIO): each write() is one TLS record, and the handshake can
    be sent a byte per TCP segment. Checks that popkitd reassembles
    ciphertext and command lines wherever they are cut."""

    def __init__(self, port, context, byte_per_segment=False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing,
                                    server_hostname="127.0.0.1")
        self.plaintext = b""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush(byte_per_segment)
                self.receive()
        self.flush()

    def flush(self, byte_per_segment=False):
        data = self.outgoing.read()
        if not byte_per_segment:
            self.sock.sendall(data)
            return
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            time.sleep(0.001)

    def receive(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.incoming.write(data)

    def write(self, data: bytes):
        """data as one TLS record, sent at once."""
        self.tls.write(data)
        self.flush()

    def lines(self, count) -> list:
        """The next count lines of plaintext, without CRLF."""
        while self.plaintext.count(b"\r\n") < count:
            try:
                self.plaintext += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self.receive()
        *got, self.plaintext = self.plaintext.split(b"\r\n", count)
        return [line.decode() for line in got]

    def close(self):
        self.sock.close()


class TlsServerCase(SharedServerTestCase):
    """One popkitd with a plain, a STARTTLS and a POP3S listener, and three
    users: a {SCRAM-SHA-256} one, a {PLAIN} one, and one with 6 MB."""

    tls = True

    @classmethod
    def populate(cls, server):
        server.add_user(SCRAM_USER, SCRAM_PASSWORD, "scram-sha-256")
        server.add_user(PLAIN_USER, PLAIN_PASSWORD)
        server.add_user(BIG_USER, BIG_PASSWORD)
        for raw in MESSAGES:
            server.add_message(SCRAM_USER, raw)
            server.add_message(PLAIN_USER, raw)
        cls.big = big_message(6)
        server.add_message(BIG_USER, cls.big)

    def stls_client(self):
        """A raw client on the STARTTLS port, switched to TLS."""
        client = self.raw(port=self.server.stls_port)
        self.assertEqual(client.cmd("STLS"), BEGIN_TLS)
        client.starttls(self.server.ssl_context())
        return client

    def tls_client(self):
        return self.raw(port=self.server.tls_port, ssl_context=self.server.ssl_context())


class TlsClients(TlsServerCase):
    """Real clients, each downloading a message and comparing bytes."""

    def setUp(self):
        super().setUp()
        self.work = os.path.join(self.server.dir, "client-" + self._testMethodName)
        os.mkdir(self.work)
        self.env = dict(os.environ, HOME=self.work, XDG_CONFIG_HOME=self.work)

    def assert_mailbox_untouched(self, user):
        self.assertEqual(len(self.server.message_files(user)), len(MESSAGES))

    def login_script(self, user, password, number) -> bytes:
        return ("USER %s\r\nPASS %s\r\nRETR %d\r\nQUIT\r\n" %
                (user, password, number)).encode()

    def check_transcript(self, transcript: bytes, number: int):
        self.assertIn(b"+OK Logged in", transcript)
        raw = MESSAGES[number - 1]
        self.assertEqual(retr_from_transcript(transcript, raw), wire_body(raw))
        self.assertTrue(transcript.rstrip().endswith(b"+OK Logging out."),
                        transcript[-200:])

    def test_gnutls_cli_starttls(self):
        # gnutls-cli sends STLS itself, then relays stdin. At the end of
        # stdin it would stop at once, so stdin stays open until the
        # server closes after QUIT and gnutls-cli exits.
        process = subprocess.Popen(
            ["gnutls-cli", "--starttls-proto=pop3", "--x509cafile",
             self.server.certificate, "-p", str(self.server.stls_port), "127.0.0.1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        watchdog = threading.Timer(CLIENT_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            process.stdin.write(self.login_script(SCRAM_USER, SCRAM_PASSWORD, 1))
            process.stdin.flush()
            out = process.stdout.read()
            code = process.wait()
        finally:
            watchdog.cancel()
            process.stdin.close()
            process.stdout.close()
        self.assertEqual(code, 0, out[-2000:])
        self.assertIn(b"- Status: The certificate is trusted.", out)
        transcript = out.split(b"- Simple Client Mode:\n\n", 1)[1]
        self.check_transcript(transcript.split(b"- Peer has closed")[0], 1)
        self.assert_mailbox_untouched(SCRAM_USER)

    def test_openssl_s_client_starttls(self):
        result = openssl_s_client(
            self.server.stls_port, "-starttls", "pop3", "-quiet",
            input_bytes=self.login_script(PLAIN_USER, PLAIN_PASSWORD, 2),
            cafile=self.server.certificate)
        self.assertEqual(result.returncode, 0, describe(result))
        self.check_transcript(result.stdout, 2)

    def test_openssl_s_client_implicit(self):
        result = openssl_s_client(
            self.server.tls_port, "-quiet",
            input_bytes=self.login_script(SCRAM_USER, SCRAM_PASSWORD, 3),
            cafile=self.server.certificate)
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertTrue(result.stdout.startswith(b"+OK popkit ready."), result.stdout[:200])
        self.check_transcript(result.stdout, 3)

    def curl(self, url, *options):
        result = run_client(["curl", "-sS", "--cacert", self.server.certificate,
                             "-u", "%s:%s" % (PLAIN_USER, PLAIN_PASSWORD)] +
                            list(options) + [url], env=self.env)
        self.assertEqual(result.returncode, 0, describe(result))
        return result.stdout

    def test_curl_pop3s(self):
        for number, raw in enumerate(MESSAGES, 1):
            with self.subTest(message=number):
                got = self.curl("pop3s://127.0.0.1:%d/%d" % (self.server.tls_port, number))
                self.assertEqual(got, crlf_form(raw))
        self.assert_mailbox_untouched(PLAIN_USER)

    def test_curl_ssl_reqd_starttls(self):
        for number, raw in enumerate(MESSAGES, 1):
            with self.subTest(message=number):
                got = self.curl("pop3://127.0.0.1:%d/%d" % (self.server.stls_port, number),
                                "--ssl-reqd")
                self.assertEqual(got, crlf_form(raw))

    def test_curl_ssl_reqd_refuses_a_port_without_stls(self):
        # The plain listener offers no STLS: a client that requires TLS
        # must give up rather than send the password in clear.
        result = run_client(["curl", "-sS", "--ssl-reqd", "--cacert", self.server.certificate,
                             "-u", "%s:%s" % (PLAIN_USER, PLAIN_PASSWORD),
                             "pop3://127.0.0.1:%d/1" % self.server.port], env=self.env)
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stdout, b"")

    def download_with_poplib(self, pop, user, password):
        try:
            pop.user(user)
            pop.pass_(password)
            self.assertEqual(pop.stat()[0], len(MESSAGES))
            for number, raw in enumerate(MESSAGES, 1):
                with self.subTest(message=number):
                    reply, lines, _ = pop.retr(number)
                    self.assertEqual(reply, b"+OK %d octets" % len(crlf_form(raw)))
                    self.assertEqual(b"".join(l + b"\r\n" for l in lines), crlf_form(raw))
        finally:
            pop.quit()

    def test_poplib_stls(self):
        pop = poplib.POP3("127.0.0.1", self.server.stls_port, timeout=60)
        self.assertIn("STLS", pop.capa())
        pop.stls(context=self.server.ssl_context())
        self.assertNotIn("STLS", pop.capa())
        self.download_with_poplib(pop, SCRAM_USER, SCRAM_PASSWORD)

    def test_poplib_pop3_ssl(self):
        pop = poplib.POP3_SSL("127.0.0.1", self.server.tls_port, timeout=60,
                              context=self.server.ssl_context())
        self.download_with_poplib(pop, PLAIN_USER, PLAIN_PASSWORD)

    def mpop_scram(self, user, password, port, starttls):
        """mpop, SASL SCRAM-SHA-256 over TLS, into a maildir; returns the
        finished process and the delivered messages (mpop stores LF line
        ends)."""
        maildir = self.server.make_maildir(os.path.join(self.work, "Maildir"))
        rcfile = os.path.join(self.work, "mpoprc")
        with open(rcfile, "w") as f:
            f.write("account default\n"
                    "host 127.0.0.1\n"
                    "port %d\n"
                    "timeout 60\n"
                    "tls on\n"
                    "tls_starttls %s\n"
                    "tls_trust_file %s\n"
                    "auth scram-sha-256\n"
                    "user %s\n"
                    "password %s\n"
                    "delivery maildir %s\n"
                    "keep on\n"
                    "only_new off\n"
                    "received_header off\n"
                    "uidls_file %s\n" %
                    (port, "on" if starttls else "off", self.server.certificate, user,
                     password, maildir, os.path.join(self.work, "uidls")))
        os.chmod(rcfile, stat.S_IRUSR | stat.S_IWUSR)
        result = run_client(["mpop", "-C", rcfile], env=self.env, cwd=self.work)
        delivered = []
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(maildir, sub)):
                with open(os.path.join(maildir, sub, name), "rb") as f:
                    delivered.append(f.read())
        return result, delivered

    def test_mpop_scram_sha_256_with_a_scram_secret(self):
        result, delivered = self.mpop_scram(SCRAM_USER, SCRAM_PASSWORD,
                                            self.server.stls_port, starttls=True)
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertEqual(sorted(delivered), sorted(lf_form(raw) for raw in MESSAGES))
        self.assert_mailbox_untouched(SCRAM_USER)

    def test_mpop_scram_sha_256_with_a_plain_secret(self):
        result, delivered = self.mpop_scram(PLAIN_USER, PLAIN_PASSWORD,
                                            self.server.tls_port, starttls=False)
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertEqual(sorted(delivered), sorted(lf_form(raw) for raw in MESSAGES))
        self.assert_mailbox_untouched(PLAIN_USER)

    def test_mpop_scram_with_a_wrong_password_fails(self):
        result, delivered = self.mpop_scram(SCRAM_USER, "not the password",
                                            self.server.tls_port, starttls=False)
        self.assertNotEqual(result.returncode, 0, describe(result))
        self.assertEqual(delivered, [])
        self.assertIn('user="%s": auth failed' % SCRAM_USER,
                      self.server.stderr_text()[self._log_start:])

    def test_6_mb_message_over_implicit_tls(self):
        client = self.tls_client()
        client.login(BIG_USER, BIG_PASSWORD)
        self.assertEqual(client.cmd("RETR 1"), "+OK %d octets" % len(crlf_form(self.big)))
        self.assertEqual(client.multiline_wire(), wire_body(self.big))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_6_mb_message_over_starttls(self):
        client = self.stls_client()
        client.login(BIG_USER, BIG_PASSWORD)
        self.assertEqual(client.cmd("RETR 1"), "+OK %d octets" % len(crlf_form(self.big)))
        self.assertEqual(client.multiline_wire(), wire_body(self.big))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")


class StartTls(TlsServerCase):
    """STLS itself (RFC 2595 section 4) and what it must forget."""

    def capa(self, client) -> list:
        self.assertEqual(client.cmd("CAPA"), "+OK Capability list follows.")
        return [line.decode() for line in client.multiline()]

    def test_capa_lists_stls_only_before_tls(self):
        client = self.raw(port=self.server.stls_port)
        before = self.capa(client)
        self.assertIn("STLS", before)
        self.assertIn("USER", before)  # loopback may send passwords in clear
        self.assertIn("SASL PLAIN LOGIN SCRAM-SHA-256", before)
        self.assertEqual(client.cmd("STLS"), BEGIN_TLS)
        client.starttls(self.server.ssl_context())
        after = self.capa(client)
        self.assertNotIn("STLS", after)
        self.assertEqual(after, [line for line in before if line != "STLS"])

    def test_capa_on_implicit_and_plain_ports_has_no_stls(self):
        for client in (self.tls_client(), self.raw()):
            with self.subTest(port=client.sock.getpeername()[1]):
                capa = self.capa(client)
                self.assertNotIn("STLS", capa)
                self.assertIn("SASL PLAIN LOGIN SCRAM-SHA-256", capa)

    def test_greeting_comes_after_the_handshake_on_the_implicit_port(self):
        client = self.tls_client()
        self.assertEqual(client.greeting, "+OK popkit ready.")
        self.assertIn(client.sock.version(), ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(client.sock.getpeercert(binary_form=True),
                         der_of(self.server.certificate))

    def test_injected_command_after_stls_is_never_run(self):
        # A man in the middle appends CAPA to the client's STLS: it arrived
        # in clear and must be dropped, so the first reply under TLS is
        # the answer to what the client sent after the handshake.
        client = self.raw(port=self.server.stls_port)
        client.send(b"STLS\r\nCAPA\r\n")
        self.assertEqual(client.line(), BEGIN_TLS)
        client.starttls(self.server.ssl_context())
        client.send(b"QUIT\r\n")
        self.assertEqual(client.wait_closed(), b"+OK Logging out.\r\n")

    def test_injected_user_after_stls_is_forgotten(self):
        client = self.raw(port=self.server.stls_port)
        client.send(("STLS\r\nUSER %s\r\n" % PLAIN_USER).encode())
        self.assertEqual(client.line(), BEGIN_TLS)
        client.starttls(self.server.ssl_context())
        self.assertEqual(client.cmd("PASS " + PLAIN_PASSWORD), "-ERR Send USER first.")
        client.login(PLAIN_USER, PLAIN_PASSWORD)
        self.assertEqual(client.cmd("STAT"),
                         "+OK %d %d" % (len(MESSAGES),
                                        sum(len(crlf_form(r)) for r in MESSAGES)))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_user_sent_before_stls_is_forgotten(self):
        client = self.raw(port=self.server.stls_port)
        self.assertEqual(client.cmd("USER " + PLAIN_USER), "+OK Send PASS.")
        self.assertEqual(client.cmd("STLS"), BEGIN_TLS)
        client.starttls(self.server.ssl_context())
        self.assertEqual(client.cmd("PASS " + PLAIN_PASSWORD), "-ERR Send USER first.")

    def test_stls_twice(self):
        client = self.stls_client()
        self.assertEqual(client.cmd("STLS"), "-ERR TLS is already active.")
        # The session goes on under TLS.
        client.login(SCRAM_USER, SCRAM_PASSWORD)
        self.assertTrue(client.cmd("STAT").startswith("+OK %d " % len(MESSAGES)))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_stls_on_the_implicit_port(self):
        client = self.tls_client()
        self.assertEqual(client.cmd("STLS"), "-ERR TLS is already active.")

    def test_stls_on_a_plain_listener(self):
        client = self.raw()
        self.assertEqual(client.cmd("STLS"), "-ERR STLS is not offered on this port.")
        client.login(PLAIN_USER, PLAIN_PASSWORD)  # the session goes on in clear
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_stls_with_an_argument_is_refused_and_stays_clear(self):
        client = self.raw(port=self.server.stls_port)
        self.assertTrue(client.cmd("STLS now").startswith("-ERR"))
        self.assertIn("STLS", self.capa(client))

    def test_stls_after_login_in_clear_is_refused(self):
        client = self.raw(port=self.server.stls_port)
        client.login(PLAIN_USER, PLAIN_PASSWORD)
        self.assertNotIn("STLS", self.capa(client))
        self.assertTrue(client.cmd("STLS").startswith("-ERR"))
        self.assertTrue(client.cmd("STAT").startswith("+OK %d " % len(MESSAGES)))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_garbage_to_the_implicit_port_closes_and_server_keeps_serving(self):
        for garbage in (b"USER demo\r\nPASS x\r\n",
                        b"GET / HTTP/1.0\r\n\r\n",
                        bytes(range(256)) * 4):
            with self.subTest(garbage=garbage[:20]):
                sock = socket.create_connection(("127.0.0.1", self.server.tls_port),
                                                timeout=10)
                try:
                    sock.sendall(garbage)
                    # The server sends at most a TLS alert, then closes.
                    sock.settimeout(10)
                    received = b""
                    while True:
                        try:
                            data = sock.recv(4096)
                        except ConnectionResetError:
                            break
                        if not data:
                            break
                        received += data
                    self.assertNotIn(b"+OK", received)
                finally:
                    sock.close()
        client = self.tls_client()
        client.login(PLAIN_USER, PLAIN_PASSWORD)
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_garbage_instead_of_a_handshake_after_stls(self):
        client = self.raw(port=self.server.stls_port)
        self.assertEqual(client.cmd("STLS"), BEGIN_TLS)
        client.send(b"USER demo\r\nPASS x\r\n")
        rest = client.wait_closed()
        self.assertNotIn(b"+OK", rest)
        self.assertNotIn(b"-ERR", rest)
        client = self.stls_client()
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_handshake_a_byte_per_segment(self):
        client = RecordClient(self.server.tls_port, self.server.ssl_context(),
                              byte_per_segment=True)
        self.addCleanup(client.close)
        self.assertEqual(client.lines(1), ["+OK popkit ready."])
        client.write(b"QUIT\r\n")
        self.assertEqual(client.lines(1), ["+OK Logging out."])

    def test_commands_cut_across_records_and_pipelined_in_one(self):
        client = RecordClient(self.server.tls_port, self.server.ssl_context())
        self.addCleanup(client.close)
        self.assertEqual(client.lines(1), ["+OK popkit ready."])
        # One command line in four records, cut inside the CRLF too.
        for piece in (b"US", b"ER " + PLAIN_USER.encode(), b"\r", b"\n"):
            client.write(piece)
        self.assertEqual(client.lines(1), ["+OK Send PASS."])
        # Then five commands in one record, answered in order.
        client.write(b"PASS %s\r\nSTAT\r\nLIST 1\r\nNOOP\r\nQUIT\r\n" %
                     PLAIN_PASSWORD.encode())
        size = len(crlf_form(MESSAGES[0]))
        total = sum(len(crlf_form(r)) for r in MESSAGES)
        replies = client.lines(5)
        self.assertTrue(replies[0].startswith("+OK Logged in"), replies)
        self.assertEqual(replies[1:], ["+OK %d %d" % (len(MESSAGES), total),
                                       "+OK 1 %d" % size, "+OK Still here.",
                                       "+OK Logging out."])

    def test_client_leaving_in_the_middle_of_a_big_retr(self):
        client = self.tls_client()
        client.login(BIG_USER, BIG_PASSWORD)
        self.assertTrue(client.cmd("RETR 1").startswith("+OK"))
        client.read_exactly(100000)
        client.abort()
        self.assertTrue(self.server.wait_for_log(
            'user="%s": disconnected' % BIG_USER, timeout=20))
        # The mailbox is free again and the server goes on.
        client = self.tls_client()
        client.login(BIG_USER, BIG_PASSWORD)
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    # -- protocol versions (openssl s_client, as a user would check) --

    def test_tls_1_2_and_1_3_accepted(self):
        for option, name in (("-tls1_2", b"TLSv1.2"), ("-tls1_3", b"TLSv1.3")):
            with self.subTest(version=option):
                result = openssl_s_client(self.server.tls_port, option, "-brief",
                                          cafile=self.server.certificate)
                self.assertEqual(result.returncode, 0, describe(result))
                self.assertIn(b"Protocol version: " + name, result.stderr)
                self.assertEqual(result.stdout, b"+OK popkit ready.\r\n+OK Logging out.\r\n")

    def test_tls_1_1_refused(self):
        # SECLEVEL=0 lets this OpenSSL offer TLS 1.1 at all, so the refusal
        # seen here is the server's.
        failures = self.server.stderr_text().count(HANDSHAKE_FAILED)
        result = openssl_s_client(self.server.tls_port, "-tls1_1", "-brief",
                                  "-cipher", "DEFAULT:@SECLEVEL=0",
                                  cafile=self.server.certificate)
        self.assertNotEqual(result.returncode, 0, describe(result))
        self.assertNotIn(b"no protocols available", result.stderr)
        self.assertNotIn(b"+OK", result.stdout)
        self.assertTrue(self.server.wait_for_log_count(HANDSHAKE_FAILED, failures + 1))
        # and the server still serves
        client = self.tls_client()
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")


class TlsConfig(PopkitTestCase):
    """Settings that shape TLS, and the ones popkitd must refuse."""

    def expect_refusal(self, server: PopkitServer, *needles) -> str:
        """Starts popkitd, which must exit non-zero with an error line that
        holds every needle; returns that line."""
        server.start(wait=False)
        try:
            code = server.wait_exit(START_TIMEOUT_S)
        except AssertionError:
            self.fail("popkitd kept running with a config it must refuse")
        server.start_failed = True  # the exit was checked here
        self.assertNotEqual(code, 0)
        text = server.stderr_text()
        for marker in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
            self.assertNotIn(marker, text)
        lines = [l for l in text.splitlines() if all(n in l for n in needles)]
        self.assertTrue(lines, "no line of stderr holds %r:\n%s" % (needles, text))
        return lines[-1]

    def test_priorities_limited_to_tls_1_2(self):
        server = self.make_server({"tls": {"priorities": "NORMAL:-VERS-ALL:+VERS-TLS1.2"}},
                                  tls=True)
        result = openssl_s_client(server.tls_port, "-tls1_3", "-brief",
                                  cafile=server.certificate)
        self.assertNotEqual(result.returncode, 0, describe(result))
        self.assertNotIn(b"+OK", result.stdout)
        self.assertTrue(server.wait_for_log_count(HANDSHAKE_FAILED, 1))
        result = openssl_s_client(server.tls_port, "-tls1_2", "-brief",
                                  cafile=server.certificate)
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertIn(b"Protocol version: TLSv1.2", result.stderr)
        self.assertEqual(result.stdout, b"+OK popkit ready.\r\n+OK Logging out.\r\n")

    def test_bad_priority_string(self):
        server = self.make_server({"tls": {"priorities": "NORMAL:+NO-SUCH-THING"}},
                                  tls=True, start=False)
        line = self.expect_refusal(server, "$.tls.priorities")
        self.assertIn(server.config_path, line)

    def test_missing_certificate_file(self):
        server = self.make_server(tls=True, start=False)
        os.unlink(server.certificate)
        self.expect_refusal(server, server.certificate)

    def test_missing_key_file(self):
        server = self.make_server(tls=True, start=False)
        os.unlink(server.key)
        self.expect_refusal(server, server.key)

    def test_key_of_another_certificate(self):
        server = self.make_server(tls=True, start=False)
        _, other_key = make_certificate(os.path.join(server.dir, "other"), "other")
        shutil.copyfile(other_key, server.key)
        self.expect_refusal(server, server.key)

    def test_silent_client_mid_handshake_is_closed(self):
        server = self.make_server({"limits": {"login_timeout_s": 1}}, tls=True)
        silent = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
        self.addCleanup(silent.close)
        client = server.raw(port=server.stls_port)
        self.addCleanup(client.close)
        self.assertEqual(client.cmd("STLS"), BEGIN_TLS)
        # Neither sends a ClientHello: both are closed, without a reply
        # (none could be read in the middle of a handshake).
        start = time.monotonic()
        self.assertEqual(silent.recv(100), b"")
        self.assertEqual(client.wait_closed(), b"")
        self.assertGreaterEqual(time.monotonic() - start, 0.5)
        # The log line follows the close, so it may come a moment later.
        self.assertTrue(server.wait_for_log("TLS handshake timeout"), server.stderr_text())

    def test_truncated_certificate_file(self):
        server = self.make_server(tls=True, start=False)
        with open(server.certificate) as f:
            pem = f.read()
        with open(server.certificate, "w") as f:
            f.write(pem[:len(pem) // 2])
        self.expect_refusal(server, server.certificate)

    def test_certificate_file_that_is_not_pem(self):
        server = self.make_server(tls=True, start=False)
        with open(server.certificate, "w") as f:
            f.write("this is not a certificate\n")
        self.expect_refusal(server, server.certificate)

    def test_relative_paths_resolve_against_the_config_directory(self):
        server = self.make_server({"tls": {"certificate": "tls/server.crt",
                                           "key": "tls/server.key"}}, tls=True)
        client = server.raw(port=server.tls_port, ssl_context=server.ssl_context())
        self.addCleanup(client.close)
        self.assertEqual(client.greeting, "+OK popkit ready.")


class CertificateReload(PopkitTestCase):
    """SIGHUP: new connections get the new certificate, running sessions
    go on, and broken new files keep the certificate that works."""

    def setUp(self):
        self.server = self.make_server(tls=True, start=False)
        self.server.add_user(PLAIN_USER, PLAIN_PASSWORD)
        self.raw_message = MESSAGES[0]
        self.server.add_message(PLAIN_USER, self.raw_message)
        self.server.start()
        self.old_der = der_of(self.server.certificate)
        self.new_cert, self.new_key = make_certificate(
            os.path.join(self.server.dir, "renewed"), "renewed", "popkit renewed")
        with open(self.server.certificate) as f:
            old_pem = f.read()
        with open(self.new_cert) as f:
            new_pem = f.read()
        # Clients trust both, so each handshake works and the certificate
        # it got tells which generation served it.
        self.context = ssl.create_default_context(cadata=old_pem + new_pem)

    def install(self, certificate, key):
        """Puts files where the config points, as certbot's hook would."""
        for source, target in ((certificate, self.server.certificate), (key, self.server.key)):
            tmp = target + ".new"
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)

    def hup_and_wait(self, needle):
        count = self.server.stderr_text().count(needle)
        self.server.signal(signal.SIGHUP)
        self.assertTrue(self.server.wait_for_log_count(needle, count + 1),
                        "no new %r in the log after SIGHUP" % needle)

    def served_certificate(self, starttls=False) -> bytes:
        if starttls:
            client = self.server.raw(port=self.server.stls_port)
            self.assertEqual(client.cmd("STLS"), BEGIN_TLS)
            client.starttls(self.context, "127.0.0.1")
        else:
            client = self.server.raw(port=self.server.tls_port, ssl_context=self.context)
        try:
            return client.sock.getpeercert(binary_form=True)
        finally:
            client.cmd("QUIT")
            client.close()

    def test_new_certificate_for_new_connections_old_session_continues(self):
        self.assertEqual(self.served_certificate(), self.old_der)
        running = self.server.raw(port=self.server.tls_port, ssl_context=self.context)
        self.addCleanup(running.close)
        running.login(PLAIN_USER, PLAIN_PASSWORD)

        self.install(self.new_cert, self.new_key)
        self.hup_and_wait("SIGHUP: reloaded")
        self.assertEqual(self.served_certificate(), der_of(self.new_cert))
        self.assertEqual(self.served_certificate(starttls=True), der_of(self.new_cert))

        # The session opened before the reload still works, on its old
        # certificate.
        self.assertEqual(running.sock.getpeercert(binary_form=True), self.old_der)
        self.assertEqual(running.cmd("RETR 1"),
                         "+OK %d octets" % len(crlf_form(self.raw_message)))
        self.assertEqual(running.multiline_wire(), wire_body(self.raw_message))
        self.assertEqual(running.cmd("QUIT"), "+OK Logging out.")

    def assert_broken_files_are_refused(self, break_files):
        """A reload with the files break_files() leaves behind keeps the
        certificate of the last good reload, and says which file."""
        self.install(self.new_cert, self.new_key)
        self.hup_and_wait("SIGHUP: reloaded")
        working = der_of(self.new_cert)
        break_files()
        self.hup_and_wait("SIGHUP: keeping the current certificates")
        line = [l for l in self.server.stderr_text().splitlines() if "SIGHUP: keeping" in l][-1]
        self.assertIn(" error ", line)
        self.assertIn(self.server.certificate, line)
        self.assertEqual(self.served_certificate(), working)
        self.assertEqual(self.served_certificate(starttls=True), working)

    def test_reload_with_a_file_that_is_not_pem(self):
        def break_files():
            with open(self.server.certificate, "w") as f:
                f.write("this is not a certificate\n")
        self.assert_broken_files_are_refused(break_files)

    def test_reload_with_the_key_of_another_certificate(self):
        def break_files():
            _, stranger_key = make_certificate(os.path.join(self.server.dir, "stranger"), "x")
            shutil.copyfile(stranger_key, self.server.key)
        self.assert_broken_files_are_refused(break_files)

    def test_reload_with_a_truncated_certificate(self):
        # What a copy interrupted half-way leaves: a PEM block whose
        # base64 ends early.
        def break_files():
            with open(self.new_cert) as f:
                pem = f.read()
            with open(self.server.certificate, "w") as f:
                f.write(pem[:len(pem) // 2])
        self.assert_broken_files_are_refused(break_files)


if __name__ == "__main__":
    run_tests()
