#!/usr/bin/env python3
"""Who may send a password how: the plaintext policy ("plaintext_auth")
before and after TLS, from loopback and from another address; and every
SASL exchange of AUTH (RFC 5034) over a raw connection, PLAIN, LOGIN and
SCRAM-SHA-256, with the SCRAM client computed here (RFC 5802, RFC 7677) so
the server is checked against an independent implementation.
"""

import base64
import hashlib
import hmac
import os
import socket
import subprocess

from popkit_harness import (PopkitTestCase, SharedServerTestCase, crlf_form,
                            run_tests)

REFUSED_STLS = ("-ERR [AUTH] Plaintext authentication is not allowed without TLS: "
                "send STLS first.")
REFUSED_POP3S = ("-ERR [AUTH] Plaintext authentication is not allowed on this "
                 "connection: use TLS (POP3S, port 995).")
AUTH_FAILED = "-ERR [AUTH] Authentication failed."
CANCELED = "-ERR Authentication canceled."
BAD_BASE64 = "-ERR Invalid base64 data."
LOGIN_USER_PROMPT = "+ " + base64.b64encode(b"Username:").decode()
LOGIN_PASSWORD_PROMPT = "+ " + base64.b64encode(b"Password:").decode()

PLAIN_USER, PLAIN_PASSWORD = "alice", "alice pw"
SCRAM_USER, SCRAM_PASSWORD = "sam", "sam pw \u00e9"
CRYPT_USER, CRYPT_PASSWORD = "carl", "carl pw"
# SCRAM escapes "," and "=" in names (RFC 5802 section 5.1).
ODD_USER, ODD_PASSWORD = "o,b=x", "odd pw"

MESSAGE = b"From: a@test.local\nTo: alice@test.local\nSubject: hi\n\nhello\n"


def b64(data) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode()


def plain_response(user, password, authzid="") -> str:
    return b64("%s\0%s\0%s" % (authzid, user, password))


def challenge_of(line: str) -> bytes:
    """The decoded data of a "+ BASE64" continuation line."""
    if not line.startswith("+ "):
        raise AssertionError("not a SASL challenge: %r" % line)
    return base64.b64decode(line[2:], validate=True)


def non_loopback_ipv4():
    """A local IPv4 address that is not loopback, or None. The UDP connect
    sends nothing; it only asks the kernel which source address it would
    use for a public destination."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            address = s.getsockname()[0]
        except OSError:
            return None
    if address.startswith("127.") or address == "0.0.0.0":
        return None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
    except OSError:
        return None
    return address


class ScramClient:
    """The client side of SCRAM-SHA-256 without channel binding."""

    def __init__(self, user, password):
        name = user.replace("=", "=3D").replace(",", "=2C")
        self.password = password
        self.nonce = b64(os.urandom(18))
        self.gs2_header = "n,,"
        self.first_bare = "n=%s,r=%s" % (name, self.nonce)

    def client_first(self) -> str:
        return b64(self.gs2_header + self.first_bare)

    def client_final(self, server_first: bytes) -> str:
        self.server_first = server_first.decode()
        fields = dict(f.split("=", 1) for f in self.server_first.split(","))
        if not fields["r"].startswith(self.nonce) or fields["r"] == self.nonce:
            raise AssertionError("server nonce does not extend ours: %r" % server_first)
        salt = base64.b64decode(fields["s"])
        iterations = int(fields["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=%s,r=%s" % (b64(self.gs2_header), fields["r"])
        auth_message = ",".join((self.first_bare, self.server_first, without_proof)).encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return b64(without_proof + ",p=" + b64(proof))

    def check_server_final(self, server_final: bytes) -> None:
        expected = b"v=" + base64.b64encode(self.server_signature)
        if server_final != expected:
            raise AssertionError("server-final %r, expected %r" % (server_final, expected))


class Sasl(SharedServerTestCase):
    """Every AUTH exchange from loopback, where PLAIN and LOGIN are allowed."""

    @classmethod
    def populate(cls, server):
        server.add_user(PLAIN_USER, PLAIN_PASSWORD)
        server.add_user(SCRAM_USER, SCRAM_PASSWORD, "scram-sha-256")
        server.add_user(CRYPT_USER, CRYPT_PASSWORD, "sha512")
        server.add_user(ODD_USER, ODD_PASSWORD, "scram-sha-256")
        for user in (PLAIN_USER, SCRAM_USER, CRYPT_USER):
            server.add_message(user, MESSAGE)
        server.make_maildir(server.maildir(ODD_USER))

    def assert_logged_in(self, client, reply, messages=1):
        """reply is the "+OK" of a login: the session is in TRANSACTION."""
        self.assertTrue(reply.startswith("+OK Logged in"), reply)
        size = len(crlf_form(MESSAGE)) * messages
        self.assertEqual(client.cmd("STAT"), "+OK %d %d" % (messages, size))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def assert_not_logged_in(self, client):
        """The session is back in AUTHORIZATION and still usable."""
        self.assertEqual(client.cmd("STAT"), "-ERR STAT is not allowed before login.")
        reply = client.cmd("AUTH PLAIN " + plain_response(PLAIN_USER, PLAIN_PASSWORD))
        self.assert_logged_in(client, reply)

    # -- AUTH alone, unknown mechanisms, syntax --

    def test_auth_alone_lists_the_mechanisms(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH"), "+OK Methods supported:")
        self.assertEqual(client.multiline(), [b"PLAIN", b"LOGIN", b"SCRAM-SHA-256"])
        self.assert_not_logged_in(client)

    def test_capa_sasl_line(self):
        client = self.raw()
        self.assertTrue(client.cmd("CAPA").startswith("+OK"))
        self.assertIn(b"SASL PLAIN LOGIN SCRAM-SHA-256", client.multiline())

    def test_unknown_mechanism(self):
        client = self.raw()
        for mechanism in ("CRAM-MD5", "GSSAPI", "SCRAM-SHA-1", "PLAINX"):
            with self.subTest(mechanism=mechanism):
                self.assertEqual(client.cmd("AUTH " + mechanism),
                                 "-ERR Unknown authentication mechanism.")
        self.assert_not_logged_in(client)

    def test_mechanism_names_are_case_insensitive(self):
        client = self.raw()
        reply = client.cmd("AUTH plain " + plain_response(PLAIN_USER, PLAIN_PASSWORD))
        self.assert_logged_in(client, reply)

    def test_auth_with_two_arguments_is_refused(self):
        client = self.raw()
        self.assertTrue(client.cmd("AUTH PLAIN abc def").startswith("-ERR"))
        self.assert_not_logged_in(client)

    # -- PLAIN (RFC 4616) --

    def test_plain_with_initial_response(self):
        client = self.raw()
        reply = client.cmd("AUTH PLAIN " + plain_response(PLAIN_USER, PLAIN_PASSWORD))
        self.assert_logged_in(client, reply)

    def test_plain_without_initial_response(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH PLAIN"), "+ ")
        reply = client.cmd(plain_response(PLAIN_USER, PLAIN_PASSWORD))
        self.assert_logged_in(client, reply)

    def test_plain_with_empty_initial_response(self):
        # "=" is an empty initial response, never a request for the empty
        # challenge; an empty PLAIN message is invalid.
        client = self.raw()
        self.assertEqual(client.cmd("AUTH PLAIN ="), "-ERR Invalid PLAIN response.")
        self.assert_not_logged_in(client)

    def test_plain_against_a_scram_secret_and_a_crypt_hash(self):
        for user, password in ((SCRAM_USER, SCRAM_PASSWORD), (CRYPT_USER, CRYPT_PASSWORD)):
            with self.subTest(user=user):
                client = self.raw()
                reply = client.cmd("AUTH PLAIN " + plain_response(user, password))
                self.assert_logged_in(client, reply)

    def test_plain_authzid_equal_to_the_user(self):
        client = self.raw()
        reply = client.cmd("AUTH PLAIN " +
                           plain_response(PLAIN_USER, PLAIN_PASSWORD, authzid=PLAIN_USER))
        self.assert_logged_in(client, reply)

    def test_plain_authzid_of_another_user(self):
        client = self.raw()
        reply = client.cmd("AUTH PLAIN " +
                           plain_response(PLAIN_USER, PLAIN_PASSWORD, authzid=SCRAM_USER))
        self.assertEqual(reply, "-ERR Authorization identity must match the user.")
        self.assert_not_logged_in(client)

    def test_plain_wrong_password(self):
        client = self.raw()
        reply = client.cmd("AUTH PLAIN " + plain_response(PLAIN_USER, "wrong"))
        self.assertEqual(reply, AUTH_FAILED)
        self.assert_not_logged_in(client)

    def test_plain_unknown_user(self):
        client = self.raw()
        reply = client.cmd("AUTH PLAIN " + plain_response("nobody", "pw"))
        self.assertEqual(reply, AUTH_FAILED)
        self.assert_not_logged_in(client)

    def test_plain_malformed_messages(self):
        client = self.raw()
        for message, reply in ((b"%s\0%s" % (PLAIN_USER.encode(), PLAIN_PASSWORD.encode()),
                                "-ERR Invalid PLAIN response."),
                               (b"\0\0\0" + PLAIN_PASSWORD.encode(),
                                "-ERR Invalid PLAIN response."),
                               (b"\0\0" + PLAIN_PASSWORD.encode(),
                                "-ERR User name and password must not be empty."),
                               (b"\0" + PLAIN_USER.encode() + b"\0",
                                "-ERR User name and password must not be empty.")):
            with self.subTest(message=message):
                self.assertEqual(client.cmd("AUTH PLAIN " + b64(message)), reply)
        self.assert_not_logged_in(client)

    def test_plain_bad_base64(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH PLAIN !!!!"), BAD_BASE64)
        self.assertEqual(client.cmd("AUTH PLAIN"), "+ ")
        self.assertEqual(client.cmd("AGFsaWNl*"), BAD_BASE64)
        self.assert_not_logged_in(client)

    def test_plain_cancel(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH PLAIN"), "+ ")
        self.assertEqual(client.cmd("*"), CANCELED)
        self.assert_not_logged_in(client)

    # -- LOGIN --

    def test_login_without_initial_response(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH LOGIN"), LOGIN_USER_PROMPT)
        self.assertEqual(client.cmd(b64(PLAIN_USER)), LOGIN_PASSWORD_PROMPT)
        self.assert_logged_in(client, client.cmd(b64(PLAIN_PASSWORD)))

    def test_login_with_initial_response(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH LOGIN " + b64(PLAIN_USER)), LOGIN_PASSWORD_PROMPT)
        self.assert_logged_in(client, client.cmd(b64(PLAIN_PASSWORD)))

    def test_login_wrong_password(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH LOGIN " + b64(PLAIN_USER)), LOGIN_PASSWORD_PROMPT)
        self.assertEqual(client.cmd(b64("wrong")), AUTH_FAILED)
        self.assert_not_logged_in(client)

    def test_login_cancel_at_each_prompt(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH LOGIN"), LOGIN_USER_PROMPT)
        self.assertEqual(client.cmd("*"), CANCELED)
        self.assertEqual(client.cmd("AUTH LOGIN"), LOGIN_USER_PROMPT)
        self.assertEqual(client.cmd(b64(PLAIN_USER)), LOGIN_PASSWORD_PROMPT)
        self.assertEqual(client.cmd("*"), CANCELED)
        self.assert_not_logged_in(client)

    def test_login_bad_base64(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH LOGIN"), LOGIN_USER_PROMPT)
        self.assertEqual(client.cmd("%%%"), BAD_BASE64)
        self.assert_not_logged_in(client)

    def test_login_empty_user(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH LOGIN ="),
                         "-ERR User name and password must not be empty.")
        self.assert_not_logged_in(client)

    # -- SCRAM-SHA-256 (RFC 7677) --

    def scram(self, client, user, password, initial_response=False):
        """Runs SCRAM up to the server-final; returns the ScramClient and
        the server's reply to the client-final."""
        scram = ScramClient(user, password)
        if initial_response:
            server_first = client.cmd("AUTH SCRAM-SHA-256 " + scram.client_first())
        else:
            self.assertEqual(client.cmd("AUTH SCRAM-SHA-256"), "+ ")
            server_first = client.cmd(scram.client_first())
        return scram, client.cmd(scram.client_final(challenge_of(server_first)))

    def test_scram_with_a_scram_secret(self):
        client = self.raw()
        scram, server_final = self.scram(client, SCRAM_USER, SCRAM_PASSWORD)
        scram.check_server_final(challenge_of(server_final))
        self.assert_logged_in(client, client.cmd(""))

    def test_scram_with_a_plain_secret_and_initial_response(self):
        client = self.raw()
        scram, server_final = self.scram(client, PLAIN_USER, PLAIN_PASSWORD,
                                         initial_response=True)
        scram.check_server_final(challenge_of(server_final))
        self.assert_logged_in(client, client.cmd(""))

    def test_scram_user_name_with_comma_and_equals(self):
        client = self.raw()
        scram, server_final = self.scram(client, ODD_USER, ODD_PASSWORD)
        scram.check_server_final(challenge_of(server_final))
        self.assert_logged_in(client, client.cmd(""), messages=0)

    def test_scram_wrong_password(self):
        client = self.raw()
        _, reply = self.scram(client, SCRAM_USER, "not the password")
        self.assertEqual(reply, AUTH_FAILED)
        self.assert_not_logged_in(client)

    def test_scram_on_a_crypt_hash_user(self):
        # A crypt hash keeps neither the password nor SCRAM keys: even the
        # right password fails.
        client = self.raw()
        _, reply = self.scram(client, CRYPT_USER, CRYPT_PASSWORD)
        self.assertEqual(reply, AUTH_FAILED)
        self.assert_not_logged_in(client)

    def test_scram_does_not_tell_who_exists(self):
        # An unknown user and a crypt-hash user get a server-first message
        # like any user, with a salt that stays the same from one attempt
        # to the next (as a stored one does), and fail only at the proof.
        client = self.raw()
        for user in ("nobody", CRYPT_USER, SCRAM_USER):
            with self.subTest(user=user):
                salts = []
                for _ in range(2):
                    scram = ScramClient(user, "wrong")
                    server_first = challenge_of(
                        client.cmd("AUTH SCRAM-SHA-256 " + scram.client_first()))
                    fields = dict(f.split("=", 1) for f in server_first.decode().split(","))
                    self.assertEqual(sorted(fields), ["i", "r", "s"])
                    self.assertGreaterEqual(int(fields["i"]), 4096)
                    salts.append(fields["s"])
                    self.assertEqual(client.cmd(scram.client_final(server_first)),
                                     AUTH_FAILED)
                self.assertEqual(salts[0], salts[1])
        self.assert_not_logged_in(client)

    def test_scram_cancel_at_each_step(self):
        client = self.raw()
        # before the client-first message
        self.assertEqual(client.cmd("AUTH SCRAM-SHA-256"), "+ ")
        self.assertEqual(client.cmd("*"), CANCELED)
        # after the server-first message
        scram = ScramClient(SCRAM_USER, SCRAM_PASSWORD)
        self.assertTrue(client.cmd("AUTH SCRAM-SHA-256 " + scram.client_first())
                        .startswith("+ "))
        self.assertEqual(client.cmd("*"), CANCELED)
        # after the server-final message, instead of the empty response:
        # the proof was right, but the client did not finish
        _, server_final = self.scram(client, SCRAM_USER, SCRAM_PASSWORD)
        self.assertTrue(challenge_of(server_final).startswith(b"v="), server_final)
        self.assertEqual(client.cmd("*"), CANCELED)
        self.assert_not_logged_in(client)

    def test_scram_final_acknowledgement_must_be_empty(self):
        client = self.raw()
        scram, server_final = self.scram(client, SCRAM_USER, SCRAM_PASSWORD)
        scram.check_server_final(challenge_of(server_final))
        self.assertEqual(client.cmd(b64("x")), "-ERR Expected an empty response.")
        self.assert_not_logged_in(client)

    def test_scram_bad_base64(self):
        client = self.raw()
        self.assertEqual(client.cmd("AUTH SCRAM-SHA-256"), "+ ")
        self.assertEqual(client.cmd("not base64!"), BAD_BASE64)
        self.assert_not_logged_in(client)

    def test_scram_nonce_tampered(self):
        client = self.raw()
        scram = ScramClient(SCRAM_USER, SCRAM_PASSWORD)
        server_first = challenge_of(client.cmd("AUTH SCRAM-SHA-256 " + scram.client_first()))
        final = base64.b64decode(scram.client_final(server_first)).decode()
        tampered = final.replace("r=" + scram.nonce, "r=X" + scram.nonce)
        reply = client.cmd(b64(tampered))
        self.assertTrue(reply.startswith("-ERR"), reply)
        self.assertNotIn("+OK", reply)
        self.assert_not_logged_in(client)

    def test_scram_channel_binding_is_refused(self):
        # "p=" asks for channel binding, which is not offered
        # (SCRAM-SHA-256-PLUS is not in the list).
        client = self.raw()
        first = b64("p=tls-unique,,n=%s,r=abcdefgh" % SCRAM_USER)
        reply = client.cmd("AUTH SCRAM-SHA-256 " + first)
        self.assertTrue(reply.startswith("-ERR"), reply)
        self.assert_not_logged_in(client)

    # -- a real client --

    def test_curl_sasl_ir(self):
        for mechanism in ("PLAIN", "LOGIN"):
            with self.subTest(mechanism=mechanism):
                result = subprocess.run(
                    ["curl", "-sS", "-v", "--sasl-ir", "--login-options",
                     "AUTH=" + mechanism, "-u", "%s:%s" % (PLAIN_USER, PLAIN_PASSWORD),
                     "pop3://127.0.0.1:%d/1" % self.server.port],
                    capture_output=True, timeout=60)
                self.assertEqual(result.returncode, 0, result.stderr.decode())
                self.assertEqual(result.stdout, crlf_form(MESSAGE))
                # The credentials went in the AUTH line itself.
                first = {"PLAIN": plain_response(PLAIN_USER, PLAIN_PASSWORD),
                         "LOGIN": b64(PLAIN_USER)}[mechanism]
                self.assertIn(("> AUTH %s %s" % (mechanism, first)).encode(), result.stderr)

    def test_auth_after_login_is_refused(self):
        client = self.raw()
        client.login(PLAIN_USER, PLAIN_PASSWORD)
        self.assertTrue(client.cmd("AUTH PLAIN " + plain_response(PLAIN_USER, PLAIN_PASSWORD))
                        .startswith("-ERR"))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")


class TlsOnlyPolicy(SharedServerTestCase):
    """plaintext_auth "tls-only": no password in clear, even on loopback."""

    tls = True
    config = {"plaintext_auth": "tls-only"}

    @classmethod
    def populate(cls, server):
        server.add_user(PLAIN_USER, PLAIN_PASSWORD)
        server.add_message(PLAIN_USER, MESSAGE)

    def capa(self, client) -> list:
        self.assertEqual(client.cmd("CAPA"), "+OK Capability list follows.")
        return [line.decode() for line in client.multiline()]

    def assert_plaintext_refused(self, client, refusal):
        capa = self.capa(client)
        self.assertNotIn("USER", capa)
        self.assertIn("SASL SCRAM-SHA-256", capa)  # PLAIN and LOGIN left out
        self.assertEqual(client.cmd("AUTH"), "+OK Methods supported:")
        self.assertEqual(client.multiline(), [b"SCRAM-SHA-256"])
        self.assertEqual(client.cmd("USER " + PLAIN_USER), refusal)
        self.assertEqual(client.cmd("PASS " + PLAIN_PASSWORD), refusal)
        self.assertEqual(client.cmd("AUTH PLAIN " +
                                    plain_response(PLAIN_USER, PLAIN_PASSWORD)), refusal)
        self.assertEqual(client.cmd("AUTH PLAIN"), refusal)
        self.assertEqual(client.cmd("AUTH LOGIN"), refusal)
        self.assertEqual(client.cmd("AUTH LOGIN " + b64(PLAIN_USER)), refusal)

    def assert_plaintext_allowed(self, client):
        capa = self.capa(client)
        self.assertIn("USER", capa)
        self.assertIn("SASL PLAIN LOGIN SCRAM-SHA-256", capa)
        client.login(PLAIN_USER, PLAIN_PASSWORD)
        self.assertEqual(client.cmd("STAT"), "+OK 1 %d" % len(crlf_form(MESSAGE)))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_starttls_port_in_clear_then_after_stls(self):
        client = self.raw(port=self.server.stls_port)
        self.assert_plaintext_refused(client, REFUSED_STLS)
        self.assertEqual(client.cmd("STLS"), "+OK Begin TLS negotiation now.")
        client.starttls(self.server.ssl_context())
        self.assert_plaintext_allowed(client)

    def test_auth_plain_after_stls(self):
        client = self.raw(port=self.server.stls_port)
        self.assertEqual(client.cmd("STLS"), "+OK Begin TLS negotiation now.")
        client.starttls(self.server.ssl_context())
        reply = client.cmd("AUTH PLAIN " + plain_response(PLAIN_USER, PLAIN_PASSWORD))
        self.assertTrue(reply.startswith("+OK Logged in"), reply)
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_plain_port_points_to_pop3s(self):
        client = self.raw()
        self.assert_plaintext_refused(client, REFUSED_POP3S)

    def test_implicit_tls_port_allows_plaintext(self):
        client = self.raw(port=self.server.tls_port, ssl_context=self.server.ssl_context())
        self.assert_plaintext_allowed(client)

    def test_scram_still_works_in_clear(self):
        # SCRAM never shows the password, so it is offered in clear.
        client = self.raw()
        scram = ScramClient(PLAIN_USER, PLAIN_PASSWORD)
        server_first = challenge_of(client.cmd("AUTH SCRAM-SHA-256 " + scram.client_first()))
        scram.check_server_final(challenge_of(client.cmd(scram.client_final(server_first))))
        self.assertTrue(client.cmd("").startswith("+OK Logged in"))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_refusal_keeps_the_session(self):
        client = self.raw()
        for _ in range(3):
            self.assertEqual(client.cmd("USER " + PLAIN_USER), REFUSED_POP3S)
        self.assertEqual(client.cmd("NOOP"), "-ERR NOOP is not allowed before login.")


class AlwaysPolicyOnLoopback(PopkitTestCase):
    def test_user_in_clear_works(self):
        server = self.make_server({"plaintext_auth": "always"}, start=False)
        server.add_user(PLAIN_USER, PLAIN_PASSWORD)
        server.add_message(PLAIN_USER, MESSAGE)
        server.start()
        client = server.raw()
        self.addCleanup(client.close)
        client.login(PLAIN_USER, PLAIN_PASSWORD)
        self.assertEqual(client.cmd("STAT"), "+OK 1 %d" % len(crlf_form(MESSAGE)))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")


class NonLoopbackClient(PopkitTestCase):
    """popkitd bound to a local address that is not loopback, so the
    client's address is not loopback either: the default policy applies."""

    def setUp(self):
        self.address = non_loopback_ipv4()
        if self.address is None:
            self.skipTest("this machine has no non-loopback IPv4 address to bind")

    def start(self, policy=None):
        config = {"plaintext_auth": policy} if policy else None
        server = self.make_server(config, host=self.address, tls=True, start=False)
        server.add_user(PLAIN_USER, PLAIN_PASSWORD)
        server.add_message(PLAIN_USER, MESSAGE)
        server.start()
        return server

    def client(self, server, **kwargs):
        client = server.raw(**kwargs)
        self.addCleanup(client.close)
        return client

    def test_default_policy_refuses_plaintext_in_clear(self):
        server = self.start()
        for port, refusal in ((server.port, REFUSED_POP3S), (server.stls_port, REFUSED_STLS)):
            with self.subTest(port=port):
                client = self.client(server, port=port)
                self.assertEqual(client.cmd("CAPA"), "+OK Capability list follows.")
                capa = client.multiline()
                self.assertNotIn(b"USER", capa)
                self.assertIn(b"SASL SCRAM-SHA-256", capa)
                self.assertEqual(client.cmd("USER " + PLAIN_USER), refusal)
                self.assertEqual(client.cmd("AUTH PLAIN " +
                                            plain_response(PLAIN_USER, PLAIN_PASSWORD)), refusal)
                self.assertEqual(client.cmd("AUTH LOGIN"), refusal)
        self.assertIn("ip=%s" % self.address, server.stderr_text())

    def test_default_policy_allows_plaintext_under_tls(self):
        server = self.start()
        client = self.client(server, port=server.stls_port)
        self.assertEqual(client.cmd("STLS"), "+OK Begin TLS negotiation now.")
        client.starttls(server.ssl_context())
        client.login(PLAIN_USER, PLAIN_PASSWORD)
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")
        client = self.client(server, port=server.tls_port, ssl_context=server.ssl_context())
        reply = client.cmd("AUTH PLAIN " + plain_response(PLAIN_USER, PLAIN_PASSWORD))
        self.assertTrue(reply.startswith("+OK Logged in"), reply)
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")

    def test_always_policy_allows_user_in_clear(self):
        server = self.start("always")
        client = self.client(server)
        self.assertEqual(client.cmd("CAPA"), "+OK Capability list follows.")
        self.assertIn(b"USER", client.multiline())
        client.login(PLAIN_USER, PLAIN_PASSWORD)
        self.assertEqual(client.cmd("STAT"), "+OK 1 %d" % len(crlf_form(MESSAGE)))
        self.assertEqual(client.cmd("QUIT"), "+OK Logging out.")


if __name__ == "__main__":
    run_tests()
