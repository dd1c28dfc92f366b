#!/usr/bin/env python3
"""ldap-auth against a real slapd, as an operator and a POP3 client see it:
logins in search mode and in dn_template mode, {SSHA} and cleartext
userPassword, the auth chain with passwd-file (and SCRAM/APOP, which a
directory user never passes), user names that try to inject into the
filter or the DN, a service account where anonymous users cannot search,
mailbox identities from an attribute, an ambiguous filter, slapd stopped,
killed and hung under a running popkitd, StartTLS and ldaps:// with a
trusted and an untrusted CA, --check-config, and popkit-deliver.

One slapd (slapd_server.py) serves the file; the tests that stop or hang
it start it again in their cleanup. The tests about a service account
get a second slapd whose ACLs let anonymous users search nothing. Every
test gets popkitd of its own (one worker, so one module instance sees
every login) with maildirs for every identity a test may log in as; each
maildir holds one message whose Subject names its owner, so a test reads
whose mailbox a login opened.
"""

import hashlib
import json
import os
import re
import subprocess
import time

from popkit_harness import (MODULES_DIR, POPKIT_DELIVER, SANITIZER_MARKERS, PopkitTestCase,
                            run_tests)
from slapd_server import SUFFIX, SlapdServer, ldif_entry
from test_auth_policy import ScramClient, challenge_of, plain_response
from test_postgres import AUTH_FAILED, AUTH_TEMP, as_bytes, poll

EX_OK, EX_NOUSER, EX_TEMPFAIL = 0, 67, 75
PEOPLE = "ou=people," + SUFFIX
# What must happen "within seconds" (recovery after an outage); sanitizer
# builds are several times slower than plain ones.
RECOVERY_BOUND_S = 15
# libldap's text for LDAP_SERVER_DOWN: the reason the log gives when slapd
# cannot be reached.
SERVER_DOWN_TEXT = "Can't contact LDAP server"

# The directory: uid -> (password, scheme, attributes). Passwords carry a
# space; some are stored as {SSHA} (made by slappasswd), some in clear.
DIRECTORY = {
    "alice": ("alice pw", "ssha", {"mail": "alice@example.test"}),
    "bob": ("bob pw", "cleartext", {"mail": "bob@example.test",
                                    "employeeNumber": "bob-box"}),
    "xavier": ("xavier pw", "ssha", {}),
    "x*": ("x-star pw", "cleartext", {}),
    "o'hara": ("o'hara pw", "ssha", {}),
    "m\u00fcller": ("m\u00fcller pw \u00e9", "ssha", {}),
    "carol": ("carol ldap pw", "ssha", {}),
    # Characters RFC 4514 escapes in a DN, in a name that logs in.
    "q,r+s=t": ("q pw", "cleartext", {}),
}
# Entries elsewhere: (uid, password, parent DN).
DEEP_ENTRIES = [
    # For scope one vs sub: below ou=people, not in it.
    ("dave", "dave pw", "ou=staff," + PEOPLE),
    # uid=twin twice: (uid=twin) under the suffix is ambiguous.
    ("twin", "twin pw", PEOPLE),
    ("twin", "other twin pw", "ou=other," + SUFFIX),
    # Where an unescaped DN template would lead the user "nest,ou=people".
    ("nest", "nested pw", "ou=people," + PEOPLE),
]
# Where an unescaped template leads the user "x+cn=y": an entry with a
# multi-valued RDN.
MULTI_RDN_DN = "uid=x+cn=y," + PEOPLE
MULTI_RDN_PASSWORD = "multi pw"
# passwd-file users of the chain tests: frank only there, carol there with
# another password than in the directory.
FILE_USERS = [("frank", "frank file pw"), ("carol", "carol file pw")]
# Every mailbox identity a test may log in as.
MAILBOXES = list(DIRECTORY) + ["bob-box", "frank", "dave", "twin"]

slapd = None


def setUpModule():
    global slapd
    slapd = SlapdServer()
    slapd.start()
    ldif = ""
    for uid, (password, scheme, attributes) in DIRECTORY.items():
        ldif += slapd.user_ldif(uid, password, scheme=scheme, **attributes)[1]
    for uid, password, parent in DEEP_ENTRIES:
        ldif += slapd.user_ldif(uid, password, parent=parent)[1]
    ldif += ldif_entry(MULTI_RDN_DN, [("objectClass", "inetOrgPerson"), ("uid", "x"),
                                      ("cn", "y"), ("sn", "x"),
                                      ("userPassword", MULTI_RDN_PASSWORD)])
    slapd.add_entries(ldif)


def tearDownModule():
    slapd.cleanup()


def ldap_entry(uri=None, **settings) -> dict:
    """An ldap-auth config object: search mode under the suffix unless
    settings name a dn_template; a setting of None is left out."""
    entry = {"module": "ldap-auth", "uri": uri or slapd.uri}
    if "dn_template" not in settings:
        entry["base"] = SUFFIX
    entry.update(settings)
    return {key: value for key, value in entry.items() if value is not None}


def message_for(box: str) -> bytes:
    return ("From: a@test.local\nTo: %s@test.local\nSubject: box of %s\n\nhello\n"
            % (box, box)).encode("utf-8")


class LdapTestCase(PopkitTestCase):
    def ldap_server(self, *auth, config=None, start=True, workers=1):
        """A popkitd whose auth chain is auth (default: ldap-auth in search
        mode against the file's slapd), with the maildir store; every
        identity of MAILBOXES has a maildir with one message, and the
        passwd-file holds FILE_USERS."""
        settings = {"workers": workers, "auth": list(auth) or [ldap_entry()]}
        settings.update(config or {})
        server = self.make_server(start=False, store="maildir", cache="none",
                                  config=settings)
        for name, password in FILE_USERS:
            server.add_user(name, password)
        for box in MAILBOXES:
            server.add_message(box, message_for(box))
        if start:
            server.start()
        return server

    def box_of(self, client) -> str:
        """Whose mailbox the session opened: the owner named by the Subject
        of its one message."""
        reply = client.cmd("RETR 1")
        self.assertTrue(reply.startswith("+OK"), reply)
        for line in client.multiline():
            if line.startswith(b"Subject: box of "):
                return line[len(b"Subject: box of "):].decode("utf-8")
        raise AssertionError("no Subject: box of ... in message 1")

    def send_login(self, client, user, password, how: str) -> str:
        """The reply that ends a login by USER/PASS ("pass") or AUTH PLAIN
        ("plain")."""
        if how == "pass":
            self.assertEqual(client.cmd(b"USER " + as_bytes(user)), "+OK Send PASS.")
            return client.cmd(b"PASS " + as_bytes(password))
        if how == "plain":
            return client.cmd("AUTH PLAIN " + plain_response(user, password))
        raise ValueError(how)

    def login_reply(self, server, user, password, how="pass", box=None,
                    timeout=10.0) -> str:
        """The reply to a login. A session that got in must have opened
        the mailbox box (default: the user's); it is closed with QUIT."""
        c = server.raw(timeout=timeout)
        try:
            reply = self.send_login(c, user, password, how)
            if reply.startswith("+OK"):
                self.assertEqual(self.box_of(c), box or user,
                                 "%r logged in to the wrong mailbox" % user)
                self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")
            return reply
        finally:
            c.close()

    def assert_logs_in(self, server, user, password, how="pass", box=None):
        reply = self.login_reply(server, user, password, how, box)
        self.assertTrue(reply.startswith("+OK Logged in"),
                        "%r with %r (%s): %s" % (user, password, how, reply))

    def assert_refused(self, server, user, password, expected=AUTH_FAILED, how="pass"):
        self.assertEqual(self.login_reply(server, user, password, how), expected,
                         "%r with %r (%s)" % (user, password, how))

    def logged_in(self, server, user, password):
        c = server.raw()
        self.addCleanup(c.close)
        c.login(user, password)
        return c


def log_since(read_log):
    """A function that returns what read_log() holds beyond what it holds
    now: the lines a log gained since (slapd's: SlapdServer.log_text,
    popkitd's: PopkitServer.stderr_text)."""
    start = len(read_log())
    return lambda: read_log()[start:]


# ---- 1. Logins ---------------------------------------------------------------


class Logins(LdapTestCase):
    def test_search_mode_with_user_pass_and_auth_plain(self):
        server = self.ldap_server()
        for how in ("pass", "plain"):
            with self.subTest(how=how):
                # alice's userPassword is {SSHA}, bob's in clear.
                self.assert_logs_in(server, "alice", "alice pw", how)
                self.assert_logs_in(server, "bob", "bob pw", how)
                self.assert_refused(server, "alice", "bob pw", how=how)
                self.assert_refused(server, "alice", "alice pw ", how=how)
                self.assert_refused(server, "bob", "BOB PW", how=how)
                self.assert_refused(server, "nobody", "alice pw", how=how)
                self.assert_logs_in(server, "m\u00fcller", "m\u00fcller pw \u00e9", how)

    def test_user_bind_reaches_slapd_as_the_entry(self):
        server = self.ldap_server()
        new_log = log_since(slapd.log_text)
        self.assert_logs_in(server, "alice", "alice pw")
        log = new_log()
        self.assertIn('BIND dn="uid=alice,%s" method=128' % PEOPLE, log)
        self.assertIn('SRCH base="%s" scope=2' % SUFFIX, log)
        self.assertIn('filter="(uid=alice)"', log)

    def test_empty_password_never_logs_in_nor_binds(self):
        server = self.ldap_server()
        new_log = log_since(slapd.log_text)
        # PASS with nothing after it: the module gets an empty password,
        # which an LDAP server would take for an anonymous
        # (unauthenticated) bind.
        self.assert_refused(server, "alice", "")
        self.assert_refused(server, "nobody", "")
        # AUTH PLAIN with an empty password: refused before any module.
        c = server.raw()
        self.addCleanup(c.close)
        reply = c.cmd("AUTH PLAIN " + plain_response("alice", ""))
        self.assertTrue(reply.startswith("-ERR"), reply)
        self.assertEqual(c.cmd("STAT"), "-ERR STAT is not allowed before login.")
        self.assertNotIn('BIND dn="uid=alice,%s"' % PEOPLE, new_log())
        # The session that tried is still usable, and alice's password works.
        self.assert_logs_in(server, "alice", "alice pw")

    def test_user_name_that_is_not_utf8_never_reaches_slapd(self):
        server = self.ldap_server()
        new_log = log_since(slapd.log_text)
        self.assert_refused(server, b"al\xffice", "alice pw")
        self.assertNotIn("SRCH", new_log())
        self.assertNotIn("BIND", new_log())

    def test_identity_attribute_with_a_mail_filter(self):
        server = self.ldap_server(ldap_entry(filter="(mail=%u)", identity_attribute="uid"))
        for how in ("pass", "plain"):
            with self.subTest(how=how):
                self.assert_logs_in(server, "alice@example.test", "alice pw", how, box="alice")
                self.assert_logs_in(server, "bob@example.test", "bob pw", how, box="bob")
                self.assert_refused(server, "alice@example.test", "bob pw", how=how)
                # The uid is not a mail address: no entry.
                self.assert_refused(server, "alice", "alice pw", how=how)

    def test_identity_attribute_absent_in_the_entry_means_the_user_name(self):
        server = self.ldap_server(ldap_entry(identity_attribute="employeeNumber"))
        self.assert_logs_in(server, "bob", "bob pw", box="bob-box")
        self.assert_logs_in(server, "alice", "alice pw", box="alice")

    def test_local_part_and_domain_placeholders(self):
        # %n and %d: the uid is the local part, and the domain must be the
        # one of the entry's mail.
        server = self.ldap_server(ldap_entry(filter="(&(uid=%n)(mail=*@%d))",
                                             identity_attribute="uid"))
        self.assert_logs_in(server, "alice@example.test", "alice pw", box="alice")
        self.assert_refused(server, "alice@elsewhere.test", "alice pw")
        # No "@": %n is the whole name and %d is empty, and (mail=*@) matches
        # no mail address.
        self.assert_refused(server, "alice", "alice pw")

    def test_scope_one_sub_and_base(self):
        sub = self.ldap_server(ldap_entry(base=PEOPLE, scope="sub"))
        self.assert_logs_in(sub, "dave", "dave pw")
        self.assert_logs_in(sub, "alice", "alice pw")
        one = self.ldap_server(ldap_entry(base=PEOPLE, scope="one"))
        self.assert_refused(one, "dave", "dave pw")
        self.assert_logs_in(one, "alice", "alice pw")
        # One level: only the twin of ou=people, so it is not ambiguous.
        self.assert_logs_in(one, "twin", "twin pw")
        self.assert_refused(one, "twin", "other twin pw")
        base = self.ldap_server(ldap_entry(base="uid=alice," + PEOPLE, scope="base"))
        self.assert_logs_in(base, "alice", "alice pw")
        self.assert_refused(base, "bob", "bob pw")

    def test_two_entries_matching_is_a_temporary_failure(self):
        server = self.ldap_server()
        new_log = log_since(server.stderr_text)
        for password in ("twin pw", "other twin pw", "wrong"):
            self.assert_refused(server, "twin", password, AUTH_TEMP)
        self.assertRegex(new_log(), r"(?i)ambiguous|more than one entry")

    def test_dn_template_mode(self):
        server = self.ldap_server(ldap_entry(dn_template="uid=%u," + PEOPLE))
        for how in ("pass", "plain"):
            with self.subTest(how=how):
                self.assert_logs_in(server, "alice", "alice pw", how)
                self.assert_logs_in(server, "bob", "bob pw", how)
                self.assert_refused(server, "alice", "bob pw", how=how)
                self.assert_refused(server, "nobody", "alice pw", how=how)
                self.assert_logs_in(server, "m\u00fcller", "m\u00fcller pw \u00e9", how)
        # Below ou=people: not where the template points.
        self.assert_refused(server, "dave", "dave pw")

    def test_dn_template_with_local_part_and_identity_attribute(self):
        server = self.ldap_server(ldap_entry(dn_template="uid=%n," + PEOPLE,
                                             identity_attribute="uid"))
        self.assert_logs_in(server, "alice@example.test", "alice pw", box="alice")
        self.assert_logs_in(server, "bob@anything.test", "bob pw", box="bob")
        self.assert_refused(server, "alice@example.test", "bob pw")


# ---- 2. User names that try to get out of the filter or the DN ---------------


# (user, password, expected): None expects a login into the user's own
# mailbox; a reply string expects exactly that reply. The passwords are
# the ones that would open a wrong entry if the name were not escaped.
FILTER_CASES = [
    ("*", "alice pw", AUTH_FAILED),
    ("*", "xavier pw", AUTH_FAILED),
    ("x*", "xavier pw", AUTH_FAILED),
    ("x*", "x-star pw", None),
    ("xavier", "x-star pw", AUTH_FAILED),
    ("xavier", "xavier pw", None),
    ("o'hara", "o'hara pw", None),
    ("a)(uid=*", "alice pw", AUTH_FAILED),
    ("alice)(uid=*", "alice pw", AUTH_FAILED),
    ("*)(|(uid=*", "alice pw", AUTH_FAILED),
    ("alice)(|(uid=*)", "alice pw", AUTH_FAILED),
    # \61 is "a" in a filter and in a DN: unescaped, this name would
    # find alice.
    ("\\61lice", "alice pw", AUTH_FAILED),
    ("alice\\", "alice pw", AUTH_FAILED),
    ("q,r+s=t", "q pw", None),
    ("nest,ou=people", "nested pw", AUTH_FAILED),
]

DN_CASES = FILTER_CASES + [
    # Unescaped, "x+cn=y" makes the DN of an entry with a multi-valued
    # RDN, "nest,ou=people" the DN of nest, and "\61lice" alice's DN. A
    # leading "#" starts RFC 4514's BER form, which slapd refuses as
    # invalid DN syntax: escaped, it is an unknown user like any other.
    ("x+cn=y", MULTI_RDN_PASSWORD, AUTH_FAILED),
    ("alice,ou=people", "alice pw", AUTH_FAILED),
    ("#0405616c696365", "alice pw", AUTH_FAILED),
]


class Injection(LdapTestCase):
    def check_cases(self, server, cases, suffix=""):
        """Each case with suffix after the user name; a login must open
        the mailbox of the name without the suffix."""
        for user, password, expected in cases:
            with self.subTest(user=user + suffix, password=password):
                reply = self.login_reply(server, user + suffix, password, box=user)
                if expected is None:
                    self.assertTrue(reply.startswith("+OK Logged in"), reply)
                else:
                    self.assertEqual(reply, expected)

    def test_filter_values_are_escaped(self):
        self.check_cases(self.ldap_server(), FILTER_CASES)

    def test_filter_values_are_escaped_with_a_mail_filter(self):
        # The same names inside a longer filter, with the identity from
        # the entry: a name that got out of its value would change which
        # entry, and so which mailbox, the login opens.
        server = self.ldap_server(ldap_entry(filter="(|(uid=%u)(mail=%u))",
                                             identity_attribute="uid"))
        self.check_cases(server, FILTER_CASES)
        self.assert_logs_in(server, "alice@example.test", "alice pw", box="alice")

    def test_dn_values_are_escaped(self):
        server = self.ldap_server(ldap_entry(dn_template="uid=%u," + PEOPLE))
        self.check_cases(server, DN_CASES)

    def test_dn_values_are_escaped_with_local_part(self):
        server = self.ldap_server(ldap_entry(dn_template="uid=%n," + PEOPLE,
                                             identity_attribute="uid"))
        self.check_cases(server, DN_CASES, suffix="@example.test")


# ---- 3. The chain with passwd-file, and SCRAM/APOP ---------------------------


def passwd_entry(server) -> dict:
    return {"module": "passwd-file", "path": server.users_path}


class Chain(LdapTestCase):
    def chain_server(self, entry=None, **config):
        server = self.ldap_server(start=False, config=config)
        server.config["auth"] = [entry or ldap_entry(), passwd_entry(server)]
        server.start()
        return server

    def test_ldap_first_then_passwd_file(self):
        self.check_chain(self.chain_server())

    def test_dn_template_tells_unknown_users_from_wrong_passwords(self):
        # frank's DN does not exist (NOT_FOUND: passwd-file decides), carol's
        # does (FAIL: the chain stops), which only the read of the DN after
        # the failed bind can tell.
        self.check_chain(self.chain_server(ldap_entry(dn_template="uid=%u," + PEOPLE)))

    def check_chain(self, server):
        for how in ("pass", "plain"):
            with self.subTest(how=how):
                self.assert_logs_in(server, "frank", "frank file pw", how)
                self.assert_refused(server, "frank", "carol file pw", how=how)
                self.assert_logs_in(server, "alice", "alice pw", how)
                self.assert_logs_in(server, "carol", "carol ldap pw", how)
                # The directory knows carol and says the password is wrong:
                # the chain stops there.
                self.assert_refused(server, "carol", "carol file pw", how=how)
                self.assert_refused(server, "nobody", "frank file pw", how=how)

    def scram_reply(self, client, user, password) -> str:
        """The reply that ends a SCRAM-SHA-256 exchange: a refusal may come
        at the client-first or at the client-final message."""
        scram = ScramClient(user, password)
        first = client.cmd("AUTH SCRAM-SHA-256 " + scram.client_first())
        if not first.startswith("+ "):
            return first
        reply = client.cmd(scram.client_final(challenge_of(first)))
        if not reply.startswith("+ "):
            return reply
        scram.check_server_final(challenge_of(reply))
        return client.cmd("")

    def apop_reply(self, client, user, password) -> str:
        timestamp = re.search(r"(<[^<>]+>)$", client.greeting)
        self.assertIsNotNone(timestamp, client.greeting)
        digest = hashlib.md5((timestamp.group(1) + password).encode()).hexdigest()
        return client.cmd("APOP %s %s" % (user, digest))

    def test_directory_users_never_pass_scram_or_apop(self):
        server = self.chain_server(apop=True)
        c = server.raw()
        self.addCleanup(c.close)
        self.assertEqual(c.cmd("CAPA"), "+OK Capability list follows.")
        capabilities = [line.decode() for line in c.multiline()]
        self.assertIn("SASL PLAIN LOGIN SCRAM-SHA-256", capabilities)
        for name, way in (("SCRAM", self.scram_reply), ("APOP", self.apop_reply)):
            with self.subTest(mechanism=name):
                # frank is only in passwd-file: the mechanism works for him.
                c = server.raw()
                self.addCleanup(c.close)
                reply = way(c, "frank", "frank file pw")
                self.assertTrue(reply.startswith("+OK Logged in"), reply)
                self.assertEqual(self.box_of(c), "frank")
                self.assertEqual(c.cmd("QUIT"), "+OK Logging out.")
                # carol is in the directory, which hands out no password:
                # passwd-file's secret for her must not open her mailbox.
                c = server.raw()
                self.addCleanup(c.close)
                self.assertEqual(way(c, "carol", "carol file pw"), AUTH_FAILED)
                c = server.raw()
                self.addCleanup(c.close)
                self.assertEqual(way(c, "carol", "carol ldap pw"), AUTH_FAILED)
                c = server.raw()
                self.addCleanup(c.close)
                self.assertEqual(way(c, "alice", "alice pw"), AUTH_FAILED)
        # USER/PASS still lets carol in with the directory's password.
        self.assert_logs_in(server, "carol", "carol ldap pw")


# ---- 4. A service account, where anonymous users cannot search --------------


class ServiceAccount(LdapTestCase):
    restricted = None

    @classmethod
    def setUpClass(cls):
        cls.restricted = SlapdServer(anonymous_search=False)
        cls.restricted.start()
        ldif = ""
        for uid in ("alice", "bob"):
            password, scheme, attributes = DIRECTORY[uid]
            ldif += cls.restricted.user_ldif(uid, password, scheme=scheme, **attributes)[1]
        cls.restricted.add_entries(ldif)

    @classmethod
    def tearDownClass(cls):
        cls.restricted.cleanup()

    def service_entry(self, **settings) -> dict:
        return ldap_entry(self.restricted.uri, bind_dn=self.restricted.service_dn,
                          bind_password=self.restricted.service_password, **settings)

    def test_search_as_the_service_account(self):
        server = self.ldap_server(self.service_entry(filter="(mail=%u)",
                                                     identity_attribute="uid"))
        new_log = log_since(self.restricted.log_text)
        self.assert_logs_in(server, "alice@example.test", "alice pw", box="alice")
        self.assert_logs_in(server, "bob@example.test", "bob pw", box="bob")
        self.assert_refused(server, "alice@example.test", "bob pw")
        self.assert_refused(server, "nobody@example.test", "bob pw")
        self.assertIn('BIND dn="%s" method=128' % self.restricted.service_dn, new_log())

    def test_anonymous_search_refused_is_a_temporary_failure(self):
        # slapd answers insufficientAccess (50) to an anonymous search
        # under a base it may not read: the directory refuses, it does not
        # say "no such user", so neither a login nor the next module.
        server = self.ldap_server(start=False)
        server.config["auth"] = [ldap_entry(self.restricted.uri), passwd_entry(server)]
        server.start()
        for user, password in (("alice", "alice pw"), ("nobody", "x"),
                               ("frank", "frank file pw")):
            with self.subTest(user=user):
                self.assert_refused(server, user, password, AUTH_TEMP)

    def test_wrong_service_password_is_no_user_error(self):
        server = self.ldap_server(ldap_entry(self.restricted.uri,
                                             bind_dn=self.restricted.service_dn,
                                             bind_password="not the service pw"))
        self.assert_refused(server, "alice", "alice pw", AUTH_TEMP)
        self.assert_refused(server, "nobody", "alice pw", AUTH_TEMP)

    def test_dn_template_reads_the_entry_as_the_service_account(self):
        # After a failed bind, only the service account can read the DN and
        # tell an unknown user (passwd-file decides) from a wrong password.
        server = self.ldap_server(start=False)
        server.config["auth"] = [
            self.service_entry(dn_template="uid=%u," + PEOPLE,
                               identity_attribute="employeeNumber"),
            passwd_entry(server)]
        server.start()
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_logs_in(server, "bob", "bob pw", box="bob-box")
        self.assert_refused(server, "alice", "bob pw")
        self.assert_refused(server, "nobody", "bob pw")
        # Not in this directory, in passwd-file.
        self.assert_logs_in(server, "carol", "carol file pw")
        self.assert_logs_in(server, "frank", "frank file pw")


# ---- 5. slapd stopped, killed, hung ----------------------------------------


def restore_slapd():
    if slapd.paused:
        slapd.resume()
    if not slapd.running():
        slapd.start_again()


class Outage(LdapTestCase):
    def setUp(self):
        self.addCleanup(restore_slapd)

    def recovery(self, server, user="bob", password="bob pw"):
        """Waits until a login works again, RECOVERY_BOUND_S at most,
        without restarting popkitd."""
        self.assertTrue(
            poll(lambda: self.login_reply(server, user, password).startswith("+OK"),
                 RECOVERY_BOUND_S, 0.1),
            "no login works %d s after slapd is back" % RECOVERY_BOUND_S)

    def module_lines(self, server) -> list:
        return [line for line in server.stderr_text().splitlines() if "ldap-auth(" in line]

    def check_outage(self, take_down):
        server = self.ldap_server(ldap_entry(timeout_s=2))
        self.assert_logs_in(server, "bob", "bob pw")
        session = self.logged_in(server, "alice", "alice pw")
        take_down()
        # The session that is in goes on: its mailbox is in a maildir.
        self.assertEqual(self.box_of(session), "alice")
        # New logins: a temporary failure, whatever the password, never
        # [AUTH]; the same again once the module knows slapd is away.
        self.assert_refused(server, "bob", "bob pw", AUTH_TEMP)
        down_lines = self.module_lines(server)
        self.assertTrue(any(SERVER_DOWN_TEXT in line for line in down_lines),
                        "the log says the directory went away, with libldap's reason")
        for user, password in (("bob", "bob pw"), ("bob", "wrong"), ("nobody", "x"),
                               ("alice", "alice pw")):
            with self.subTest(user=user, password=password):
                self.assert_refused(server, user, password, AUTH_TEMP)
        # Neither a line per login nor one per attempt to reconnect.
        time.sleep(1.0)
        self.assertEqual(self.module_lines(server), down_lines)
        self.assertEqual(session.cmd("QUIT"), "+OK Logging out.")
        slapd.start_again()
        self.recovery(server)
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_refused(server, "alice", "bob pw")
        back_lines = self.module_lines(server)[len(down_lines):]
        self.assertEqual(len(back_lines), 1, "one line when the directory is back")

    def test_slapd_stopped_and_started_again(self):
        self.check_outage(slapd.stop)

    def test_slapd_killed_and_started_again(self):
        self.check_outage(slapd.kill)

    def test_restart_between_logins_costs_no_login(self):
        # slapd restarts while popkitd's connections are idle: the first
        # login after it finds them broken, and goes on a new one.
        server = self.ldap_server(ldap_entry(reconnect_max_ms=500), workers=1)
        self.assert_logs_in(server, "alice", "alice pw")
        slapd.stop()
        slapd.start_again()
        time.sleep(1.0)  # more than the backoff's first steps (100, 200, 400 ms)
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_logs_in(server, "bob", "bob pw")

    def test_slapd_hung_and_resumed(self):
        timeout_s = 1
        server = self.ldap_server(ldap_entry(timeout_s=timeout_s))
        self.assert_logs_in(server, "bob", "bob pw")
        session = self.logged_in(server, "alice", "alice pw")
        slapd.pause()
        started = time.monotonic()
        self.assert_refused(server, "bob", "bob pw", AUTH_TEMP)
        elapsed = time.monotonic() - started
        # timeout_s per operation; an operation may be sent once more on
        # a new connection, which also times out.
        # Bounded, with room for a loaded machine: a login that waited on
        # the hung slapd for good would never end.
        self.assertLess(elapsed, 4 * timeout_s + 10,
                        "a hung slapd held a login for %.1f s" % elapsed)
        self.assertEqual(self.box_of(session), "alice")
        self.assert_refused(server, "nobody", "x", AUTH_TEMP)
        slapd.resume()
        self.recovery(server)
        self.assertEqual(session.cmd("QUIT"), "+OK Logging out.")

    def test_two_workers_recover(self):
        reconnect_max_ms = 500
        server = self.ldap_server(ldap_entry(reconnect_max_ms=reconnect_max_ms),
                                  workers=2)
        for _ in range(4):
            self.assert_logs_in(server, "bob", "bob pw")
        slapd.kill()
        for _ in range(4):
            self.assert_refused(server, "bob", "bob pw", AUTH_TEMP)
        slapd.start_again()
        self.recovery(server)
        # Each worker reconnects on its own backoff: once the slowest has
        # had its next try (reconnect_max_ms at most), every login works,
        # whichever worker takes it.
        time.sleep(reconnect_max_ms / 1000 + 0.5)
        for _ in range(8):
            self.assert_logs_in(server, "bob", "bob pw")


# ---- 6. TLS -------------------------------------------------------------------


class Tls(LdapTestCase):
    def test_starttls_with_the_ca(self):
        server = self.ldap_server(ldap_entry(starttls=True, ca_file=slapd.ca_file))
        new_log = log_since(slapd.log_text)
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_refused(server, "alice", "bob pw")
        log = new_log()
        # StartTLS's extended operation (RFC 4511 section 4.14.1).
        self.assertIn("EXT oid=1.3.6.1.4.1.1466.20037", log)
        self.assertIn("TLS established", log)

    def test_ldaps_with_the_ca(self):
        # (Not ldaps://localhost: libldap checks the certificate against
        # the reverse lookup of the peer's address for "localhost", which
        # names whatever /etc/hosts says 127.0.0.1 is.)
        server = self.ldap_server(ldap_entry(slapd.ldaps_uri, ca_file=slapd.ca_file))
        new_log = log_since(slapd.log_text)
        self.assert_logs_in(server, "alice", "alice pw")
        self.assert_refused(server, "alice", "bob pw")
        log = new_log()
        self.assertIn("(IP=127.0.0.1:%d)" % slapd.tls_port, log)
        self.assertIn("TLS established", log)

    def test_an_untrusted_certificate_is_refused(self):
        for name, settings in (("starttls", {"starttls": True}),
                               ("ldaps", {"uri": slapd.ldaps_uri})):
            with self.subTest(name):
                server = self.ldap_server(ldap_entry(ca_file=slapd.other_ca_file,
                                                     **settings))
                new_log = log_since(slapd.log_text)
                self.assert_refused(server, "alice", "alice pw", AUTH_TEMP)
                self.assertNotIn('BIND dn="uid=alice', new_log())
                self.assertRegex(server.stderr_text(), r"(?i)certificate")

    def test_tls_verify_false_accepts_any_certificate_and_says_so(self):
        for name, settings in (("starttls", {"starttls": True}),
                               ("ldaps", {"uri": slapd.ldaps_uri})):
            with self.subTest(name):
                server = self.ldap_server(ldap_entry(ca_file=slapd.other_ca_file,
                                                     tls_verify=False, **settings))
                self.assertRegex(server.stderr_text(), r"tls_verify")
                self.assert_logs_in(server, "alice", "alice pw")


# ---- 7. --check-config ---------------------------------------------------------


class CheckConfig(LdapTestCase):
    def check(self, server, entry) -> tuple:
        return server.check_config(auth=[entry])

    def test_good_configs_pass(self):
        server = self.ldap_server(start=False)
        for entry in (ldap_entry(),
                      ldap_entry(dn_template="uid=%n,ou=%d,ou=100%%," + SUFFIX),
                      ldap_entry(slapd.ldaps_uri, ca_file=slapd.ca_file),
                      ldap_entry(starttls=True, scope="one", filter="(&(uid=%n)(o=%d%%))",
                                 bind_dn=slapd.service_dn, bind_password="x",
                                 identity_attribute="uid", timeout_s=300,
                                 bind_connections=32, reconnect_max_ms=100)):
            with self.subTest(entry=entry):
                code, stderr = self.check(server, entry)
                self.assertEqual(code, 0, stderr)

    def test_bad_configs_name_the_key(self):
        server = self.ldap_server(start=False)
        uri_less = ldap_entry()
        del uri_less["uri"]
        cases = [
            ("uri", uri_less),
            ("dn_template", ldap_entry(dn_template="uid=%u," + PEOPLE, base=SUFFIX)),
            ("dn_template", dict(ldap_entry(dn_template="uid=%u," + PEOPLE),
                                 filter="(uid=%u)")),
            ("filter", ldap_entry(filter="(uid=%x)")),
            ("dn_template", ldap_entry(dn_template="uid=%x," + PEOPLE)),
            ("bind_password", ldap_entry(bind_dn=slapd.service_dn)),
            ("scope", ldap_entry(scope="subtree")),
            ("starttls", ldap_entry(slapd.ldaps_uri, starttls=True)),
            ("timeout_s", ldap_entry(timeout_s=0)),
        ]
        for key, entry in cases:
            with self.subTest(key=key, entry=entry):
                code, stderr = self.check(server, entry)
                self.assertEqual(code, 1, stderr)
                last = stderr.strip().splitlines()[-1]
                self.assertTrue(last.startswith("popkitd: "), last)
                self.assertRegex(last, r"\b%s\b" % re.escape(key))
                if "%x" in json.dumps(entry):
                    self.assertIn("%x", last)


# ---- 8. popkit-deliver ---------------------------------------------------------


class Deliver(LdapTestCase):
    def deliver(self, server, user, message):
        result = subprocess.run(
            [POPKIT_DELIVER, "-c", server.config_path, "--modules-dir", MODULES_DIR, user],
            input=message, capture_output=True, timeout=60)
        stderr = result.stderr.decode("utf-8", "replace")
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, stderr)
        return result.returncode, stderr

    def test_delivery_through_the_directory(self):
        self.addCleanup(restore_slapd)
        server = self.ldap_server(ldap_entry(filter="(mail=%u)", identity_attribute="uid"),
                                  start=False)
        server.write_config()
        message = b"From: x@test.local\nSubject: delivered\n\nhi\n"
        before = server.message_files("alice")
        code, stderr = self.deliver(server, "alice@example.test", message)
        self.assertEqual(code, EX_OK, stderr)
        self.assertEqual(len(server.message_files("alice")), len(before) + 1)
        self.assertFalse(os.path.exists(server.maildir("alice@example.test")))
        code, stderr = self.deliver(server, "nobody@example.test", message)
        self.assertEqual(code, EX_NOUSER, stderr)
        self.assertFalse(os.path.exists(server.maildir("nobody@example.test")))
        # The uid is no mail address: unknown too.
        code, stderr = self.deliver(server, "alice", message)
        self.assertEqual(code, EX_NOUSER, stderr)
        slapd.stop()
        code, stderr = self.deliver(server, "alice@example.test", message)
        self.assertEqual(code, EX_TEMPFAIL, stderr)
        self.assertEqual(len(server.message_files("alice")), len(before) + 1)

    def test_delivery_in_dn_template_mode(self):
        server = self.ldap_server(ldap_entry(dn_template="uid=%u," + PEOPLE,
                                             identity_attribute="employeeNumber"),
                                  start=False)
        server.write_config()
        message = b"Subject: delivered\n\nhi\n"
        code, stderr = self.deliver(server, "bob", message)
        self.assertEqual(code, EX_OK, stderr)
        self.assertEqual(len(server.message_files("bob-box")), 2)
        self.assertEqual(len(server.message_files("bob")), 1)
        code, stderr = self.deliver(server, "nobody", message)
        self.assertEqual(code, EX_NOUSER, stderr)
        code, stderr = self.deliver(server, "*", message)
        self.assertEqual(code, EX_NOUSER, stderr)


if __name__ == "__main__":
    run_tests()
