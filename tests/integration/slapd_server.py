#!/usr/bin/env python3
"""A real OpenLDAP server for popkit's integration tests.

SlapdServer runs the distribution's slapd (Debian packages slapd and
ldap-utils) in a temporary directory, with an old-style slapd.conf of its
own: the core, cosine, inetorgperson and nis schemas, one mdb database for
dc=example,dc=test in DIR/db, a rootdn the test adds entries as, and a
service account (cn=popkit,ou=services,...) for popkit's bind_dn. It
listens on ldap://127.0.0.1:PORT (StartTLS offered) and
ldaps://127.0.0.1:TLS_PORT, ports the kernel picked, with a certificate
for 127.0.0.1 and localhost signed by a test CA made here with openssl
(self.ca_file). A second CA that signed nothing (self.other_ca_file) lets
a test show that an untrusted certificate is refused.

ACLs are the usual ones of a site: userPassword is never read, only used
to bind (`by anonymous auth`) and changed by its owner. Everything else is
readable by anyone (anonymous_search=True, the default), or, with
anonymous_search=False, only by the service account and by an entry
itself: an anonymous search finds nothing there.

Tests make it fail the ways a directory fails in production: stop() and
start_again() on the same ports with the same data (a restart), kill()
(SIGKILL, a crash: mdb keeps what it said it wrote), pause() and resume()
(SIGSTOP, SIGCONT: connections are accepted and nothing is answered, as
by a stuck server). slapd runs in the foreground (`-d`), so its pid is
ours; its log (`stats`: every connection, operation and result) is in
DIR/slapd.log.

A server is stopped and its directory removed by cleanup(), at the latest
when the interpreter exits (atexit); a watchdog process does the same if
the test process is killed outright (a ctest timeout sends SIGKILL), so no
test leaves a slapd behind.

Run this file to check a machine: it starts a server, adds a user, binds
as that user over StartTLS and over ldaps://, restarts the server, and
prints what each step cost.
"""

import atexit
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from server_process import (ServerInDirectory, free_port, kill_and_wait, pid_working_in,
                            run_watchdog, start_watchdog, timed_step)

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SLAPPASSWD = "/usr/sbin/slappasswd"
LDAP_TOOLS = ("ldapadd", "ldapsearch", "ldapwhoami")
SCHEMA_DIR = "/etc/ldap/schema"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
MODULE_DIR = "/usr/lib/ldap"

SUFFIX = "dc=example,dc=test"
ROOT_DN = "cn=admin," + SUFFIX
SERVICE_DN = "cn=popkit,ou=services," + SUFFIX

START_TIMEOUT_S = 20
TOOL_TIMEOUT_S = 30

# An anonymous simple bind (RFC 4511 section 4.2, message id 1) and the
# start of a successful answer: the BindResponse tag, length 7, and
# resultCode 0. A slapd that answers it serves requests.
ANONYMOUS_BIND = bytes.fromhex("300c020101600702010304008000")
BIND_SUCCESS = bytes.fromhex("61070a0100")


def dn_value(value: str) -> str:
    """value as an attribute value in a DN string (RFC 4514 section 2.4):
    the special characters escaped with a backslash, a leading '#' or
    space and a trailing space too, NUL as \\00. Other characters, UTF-8
    included, stay as they are."""
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch == "\0":
            out.append("\\00")
        elif ch in ',+"\\<>;=' or (ch == "#" and i == 0) or \
                (ch == " " and i in (0, last)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def ldif_line(name: str, value) -> str:
    """One `name: value` line of LDIF (RFC 2849), or `name:: base64` when
    the value is not a SAFE-STRING (non-ASCII, a line end, NUL, a leading
    space, colon or '<', a trailing space) or is bytes."""
    if isinstance(value, str):
        safe = all(0 < ord(ch) < 128 and ch not in "\r\n" for ch in value) and \
            not value[:1] in (" ", ":", "<") and not value.endswith(" ")
        if safe:
            return "%s: %s" % (name, value)
        value = value.encode("utf-8")
    return "%s:: %s" % (name, base64.b64encode(value).decode("ascii"))


def ldif_entry(dn: str, attributes) -> str:
    """An LDIF record: dn and (name, value) pairs, ending with a blank line."""
    lines = [ldif_line("dn", dn)] + [ldif_line(n, v) for n, v in attributes]
    return "\n".join(lines) + "\n\n"


def parse_ldif_dns(text: str) -> list:
    """The DNs of ldapsearch -LLL output (folded lines joined, base64
    decoded)."""
    dns = []
    for line in text.replace("\n ", "").splitlines():
        if line.startswith("dn:: "):
            dns.append(base64.b64decode(line[5:]).decode("utf-8"))
        elif line.startswith("dn: "):
            dns.append(line[4:])
    return dns


def ssha_hash(password: str) -> str:
    """{SSHA} of password, made by slappasswd as an admin would."""
    result = subprocess.run([SLAPPASSWD, "-h", "{SSHA}", "-n", "-s", password],
                            capture_output=True, timeout=TOOL_TIMEOUT_S, check=True)
    return result.stdout.decode("ascii").strip()


def slapd_pid(directory: str):
    """The pid of directory's slapd if it runs, else None."""
    return pid_working_in(os.path.join(directory, "slapd.pid"), directory)


def run_openssl(args, cwd):
    subprocess.run(["openssl"] + args, cwd=cwd, check=True, capture_output=True,
                   timeout=TOOL_TIMEOUT_S)


def make_test_pki(directory: str):
    """In directory: ca.pem (a CA), server.pem and server.key (signed by
    it, for IP 127.0.0.1 and DNS localhost) and other-ca.pem (a CA that
    signed nothing here). EC P-256 keys: quick to make."""
    os.makedirs(directory, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name, subject in (("ca", "/CN=popkit test LDAP CA"),
                          ("other-ca", "/CN=popkit unrelated CA")):
        run_openssl(["req", "-x509"] + ec +
                    ["-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
                     "-subj", subject,
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)
    run_openssl(["req", "-new"] + ec +
                ["-keyout", "server.key", "-out", "server.csr",
                 "-subj", "/CN=localhost"], directory)
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run_openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem",
                 "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                 "-extfile", "server.ext", "-out", "server.pem"], directory)


class SlapdServer(ServerInDirectory):
    """One slapd in a temporary directory (self.dir): slapd.conf, db/,
    tls/, slapd.log, slapd.pid. self.uri and self.ldaps_uri are what
    ldap-auth's "uri" takes; self.ca_file its "ca_file"."""

    def __init__(self, anonymous_search: bool = True):
        self.anonymous_search = anonymous_search
        self.host = "127.0.0.1"
        self.suffix = SUFFIX
        self.root_dn = ROOT_DN
        self.service_dn = SERVICE_DN
        # Passwords with a space and a non-ASCII letter: nothing on the
        # way may split or mangle them.
        self.root_password = "root pw \u00e9"
        self.service_password = "service pw \u00e9"
        super().__init__()
        self.port = self.tls_port = None
        self.ca_file = self.other_ca_file = None
        self._parents = set()
        self._log = None

    @property
    def uri(self) -> str:
        return "ldap://%s:%d" % (self.host, self.port)

    @property
    def ldaps_uri(self) -> str:
        return "ldaps://%s:%d" % (self.host, self.tls_port)

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "slapd.log")

    def _path(self, *parts) -> str:
        return os.path.join(self.dir, *parts)

    # -- life cycle --

    def start(self):
        """A new server with the base entries in a new temporary directory,
        on free ports."""
        if self.dir is not None:
            raise RuntimeError("this SlapdServer was started already")
        missing = [tool for tool in (SLAPD, SLAPADD, SLAPPASSWD) if not os.access(tool, os.X_OK)]
        missing += [tool for tool in LDAP_TOOLS if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(
                "%s not found: the ldap tests need OpenLDAP's server and tools; "
                ".ci/run and packaging/install-deps.sh install them (Debian packages "
                "slapd and ldap-utils)" % ", ".join(missing))
        atexit.register(self.cleanup)
        self.dir = tempfile.mkdtemp(prefix="popkit-slapd-")
        self._watchdog = start_watchdog(__file__, self.dir)
        make_test_pki(self._path("tls"))
        self.ca_file = self._path("tls", "ca.pem")
        self.other_ca_file = self._path("tls", "other-ca.pem")
        os.mkdir(self._path("db"))
        with open(self._path("rootpw"), "w", encoding="utf-8") as f:
            f.write(self.root_password)  # ldapadd -y: no newline
        with open(self._path("slapd.conf"), "w", encoding="utf-8") as f:
            f.write(self._config())
        self._slapadd(self._base_ldif())
        # A port free a moment ago may be taken by the time slapd binds
        # it: try others then.
        for attempt in range(5):
            self.port = free_port(self.host)
            self.tls_port = free_port(self.host)
            if self.port == self.tls_port:
                continue
            try:
                return self._launch()
            except RuntimeError:
                if attempt == 4 or "Address already in use" not in self.log_text():
                    raise
        return self

    def _config(self) -> str:
        lines = ["# popkit tests: a throwaway directory server"]
        lines += ["include %s/%s.schema" % (SCHEMA_DIR, name) for name in SCHEMAS]
        lines += [
            "pidfile %s" % self._path("slapd.pid"),
            "argsfile %s" % self._path("slapd.args"),
            "modulepath %s" % MODULE_DIR,
            "moduleload back_mdb",
            "TLSCACertificateFile %s" % self._path("tls", "ca.pem"),
            "TLSCertificateFile %s" % self._path("tls", "server.pem"),
            "TLSCertificateKeyFile %s" % self._path("tls", "server.key"),
            "database mdb",
            'suffix "%s"' % SUFFIX,
            'rootdn "%s"' % ROOT_DN,
            "rootpw %s" % ssha_hash(self.root_password),
            "directory %s" % self._path("db"),
            "maxsize 67108864",
            # userPassword: used to bind, changed by its owner, read by
            # nobody (the rootdn is above ACLs).
            "access to attrs=userPassword",
            "  by self write",
            "  by anonymous auth",
            "  by * none",
        ]
        if self.anonymous_search:
            lines += ["access to *", "  by * read"]
        else:
            lines += ["access to *",
                      '  by dn.exact="%s" read' % SERVICE_DN,
                      "  by self read",
                      "  by anonymous auth",
                      "  by * none"]
        return "\n".join(lines) + "\n"

    def _base_ldif(self) -> str:
        entries = [
            (SUFFIX, [("objectClass", "dcObject"), ("objectClass", "organization"),
                      ("dc", "example"), ("o", "popkit tests")]),
            ("ou=people," + SUFFIX, [("objectClass", "organizationalUnit"),
                                     ("ou", "people")]),
            ("ou=services," + SUFFIX, [("objectClass", "organizationalUnit"),
                                       ("ou", "services")]),
            (SERVICE_DN, [("objectClass", "organizationalRole"),
                          ("objectClass", "simpleSecurityObject"), ("cn", "popkit"),
                          ("userPassword", ssha_hash(self.service_password))]),
        ]
        self._parents.update(dn.lower() for dn, _ in entries)
        return "".join(ldif_entry(dn, attributes) for dn, attributes in entries)

    def _slapadd(self, ldif: str):
        """Load entries offline (slapd must not run on the database)."""
        result = subprocess.run([SLAPADD, "-f", self._path("slapd.conf"), "-q"],
                                input=ldif.encode("utf-8"), capture_output=True,
                                cwd=self.dir, timeout=TOOL_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError("slapadd exited with %d:\n%s\n---- LDIF ----\n%s" % (
                result.returncode, result.stderr.decode("utf-8", "replace"), ldif))

    def _launch(self):
        urls = "ldap://%s:%d/ ldaps://%s:%d/" % (self.host, self.port, self.host,
                                                 self.tls_port)
        # -d keeps slapd in the foreground (any level, 0 too) and sends its
        # log to stderr; "stats" logs every connection, operation and
        # result, which is what a failed test needs to be read.
        argv = [SLAPD, "-f", self._path("slapd.conf"), "-h", urls, "-d", "stats"]
        self._log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                                            stdout=self._log, stderr=subprocess.STDOUT)
        finally:
            self._log.close()  # the child has its own copy
        self.paused = False
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("slapd exited with %d before answering:\n%s" %
                                   (self.process.returncode, self.log_text()))
            if self.answers(timeout=1) and self._accepts(self.tls_port):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("slapd does not answer on %s after %d s:\n%s" %
                                   (self.uri, START_TIMEOUT_S, self.log_text()))
            time.sleep(0.01)

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=1):
                return True
        except OSError:
            return False

    def answers(self, timeout: float = 1.0) -> bool:
        """Whether slapd answers an anonymous bind on ldap:// in time."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                s.sendall(ANONYMOUS_BIND)
                reply = b""
                while len(reply) < 14:
                    data = s.recv(64)
                    if not data:
                        break
                    reply += data
                return BIND_SUCCESS in reply
        except OSError:
            return False

    def start_again(self):
        """Start the stopped (or killed) server on the same ports and data."""
        if self.running():
            raise RuntimeError("slapd is running already")
        return self._launch()


    def kill(self):
        """SIGKILL, as a crash would, and wait until it is gone."""
        if not self.running():
            raise RuntimeError("slapd is not running")
        self.process.kill()
        self.process.wait()
        self.process = None
        self.paused = False

    # -- entries --

    def tool_env(self, ca_file=None) -> dict:
        """The environment of the ldap-utils tools: no ldap.conf of the
        machine or user, and ca_file (default: the test CA) trusted."""
        env = dict(os.environ, LDAPCONF="/dev/null", LDAPRC="/dev/null",
                   LDAPTLS_CACERT=ca_file or self.ca_file, LDAPTLS_REQCERT="demand")
        env.pop("LDAPNOINIT", None)
        return env

    def _tool(self, argv, input_text=None, check=True) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, input=(input_text or "").encode("utf-8"),
                                capture_output=True, env=self.tool_env(),
                                timeout=TOOL_TIMEOUT_S)
        if check and result.returncode != 0:
            raise RuntimeError("%s exited with %d:\n%s%s" % (
                argv[0], result.returncode, result.stdout.decode("utf-8", "replace"),
                result.stderr.decode("utf-8", "replace")))
        return result

    def add_entries(self, ldif: str):
        """Add the LDIF records as the rootdn: with ldapadd while slapd
        runs, with slapadd while it is stopped."""
        if self.running():
            self._tool(["ldapadd", "-x", "-H", self.uri, "-D", ROOT_DN,
                        "-y", self._path("rootpw")], ldif)
        else:
            self._slapadd(ldif)

    def parent_ldif(self, parent: str) -> str:
        """LDIF for organizationalUnit entries that parent (a DN under the
        suffix, made of ou=... RDNs) needs and that are not there yet."""
        out = ""
        if parent.lower() in self._parents:
            return out
        if not parent.lower().endswith("," + SUFFIX) or not parent.lower().startswith("ou="):
            raise ValueError("parent %r: expected ou=...,%s" % (parent, SUFFIX))
        rdn, above = parent.split(",", 1)
        out += self.parent_ldif(above)
        out += ldif_entry(parent, [("objectClass", "organizationalUnit"), ("ou", rdn[3:])])
        self._parents.add(parent.lower())
        return out

    def user_dn(self, uid: str, ou: str = "people", parent=None) -> str:
        return "uid=%s,%s" % (dn_value(uid), parent or "ou=%s,%s" % (dn_value(ou), SUFFIX))

    def user_ldif(self, uid: str, password, ou: str = "people", parent=None,
                  scheme: str = "ssha", **attributes) -> tuple:
        """(dn, LDIF) of an inetOrgPerson uid=UID under ou=OU (or the DN
        parent), with the ou entries it needs. password: userPassword as
        {SSHA} (scheme "ssha") or as it is (scheme "cleartext"), none if
        None. attributes: more attributes (a list for several values);
        cn and sn default to the uid."""
        parent = parent or "ou=%s,%s" % (dn_value(ou), SUFFIX)
        dn = self.user_dn(uid, parent=parent)
        values = [("objectClass", "inetOrgPerson"), ("uid", uid)]
        attributes = dict({"cn": uid, "sn": uid}, **attributes)
        for name, value in attributes.items():
            for one in value if isinstance(value, (list, tuple)) else [value]:
                values.append((name, one))
        if password is not None:
            if scheme == "ssha":
                values.append(("userPassword", ssha_hash(password)))
            elif scheme == "cleartext":
                values.append(("userPassword", password))
            else:
                raise ValueError("scheme %r: expected ssha or cleartext" % scheme)
        return dn, self.parent_ldif(parent) + ldif_entry(dn, values)

    def add_user(self, uid: str, password, ou: str = "people", **kwargs) -> str:
        """Add one user (see user_ldif); returns its DN."""
        dn, ldif = self.user_ldif(uid, password, ou, **kwargs)
        self.add_entries(ldif)
        return dn

    def search_dns(self, search_filter: str, base: str = SUFFIX) -> list:
        """The DNs of the entries that match search_filter, searched as the
        rootdn (sees everything)."""
        result = self._tool(["ldapsearch", "-LLL", "-x", "-H", self.uri, "-D", ROOT_DN,
                             "-y", self._path("rootpw"), "-b", base, search_filter, "1.1"])
        return parse_ldif_dns(result.stdout.decode("utf-8"))

    def whoami(self, dn: str, password: str, how: str = "starttls", ca_file=None) -> str:
        """ldapwhoami as dn: how is "starttls" (ldap:// with -ZZ), "ldaps"
        or "plain"; returns the authzid slapd names ("dn:..."). Raises
        RuntimeError with ldapwhoami's message when the bind fails."""
        argv = ["ldapwhoami", "-x", "-D", dn, "-y", "/dev/stdin"]
        argv += {"starttls": ["-H", self.uri, "-ZZ"], "ldaps": ["-H", self.ldaps_uri],
                 "plain": ["-H", self.uri]}[how]
        result = subprocess.run(argv, input=password.encode("utf-8"), capture_output=True,
                                env=self.tool_env(ca_file), timeout=TOOL_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError("ldapwhoami exited with %d: %s" % (
                result.returncode, result.stderr.decode("utf-8", "replace").strip()))
        return result.stdout.decode("utf-8").strip()


def _self_check():
    """Every method once, with what it cost."""
    server = SlapdServer()
    timed_step("start", server.start)
    directory = server.dir
    try:
        print("uri:", server.uri, server.ldaps_uri)
        dn = timed_step("add_user (SSHA)", server.add_user, "m\u00fcller", "pw \u00fc 1",
                  mail="mueller@example.test")
        expected = "dn:" + dn.lower()
        assert timed_step("whoami, StartTLS", server.whoami, dn, "pw \u00fc 1").lower() == expected
        assert timed_step("whoami, ldaps", server.whoami, dn, "pw \u00fc 1", "ldaps").lower() \
            == expected
        for how in ("starttls", "ldaps"):
            try:
                server.whoami(dn, "pw \u00fc 1", how, ca_file=server.other_ca_file)
                raise AssertionError("an untrusted certificate was accepted (%s)" % how)
            except RuntimeError as e:
                assert "Can't contact LDAP server" in str(e) or "(-11)" in str(e) \
                    or "Connect error" in str(e), e
        try:
            server.whoami(dn, "wrong")
            raise AssertionError("a wrong password bound")
        except RuntimeError as e:
            assert "Invalid credentials" in str(e), e
        odd = ["*", "x*", "o'hara", "a)(uid=*", " lead,+\"\\<>;=#", "#x "]
        ldif = "".join(server.user_ldif(uid, "pw of " + uid, scheme="cleartext")[1]
                       for uid in odd)
        timed_step("add_entries (%d users)" % len(odd), server.add_entries, ldif)
        for uid in odd:
            assert server.whoami(server.user_dn(uid), "pw of " + uid, "plain"), uid
        dns = server.search_dns("(uid=*)")
        assert len(dns) == len(odd) + 1, dns
        staff = server.add_user("deep", "deep pw", parent="ou=staff,ou=people," + SUFFIX)
        assert server.search_dns("(uid=deep)") == [staff]
        timed_step("pause", server.pause)
        assert not server.answers(timeout=0.3), "a paused slapd answered"
        timed_step("resume", server.resume)
        assert server.answers()
        timed_step("stop", server.stop)
        assert not server.running() and not server.answers(timeout=0.3)
        ports = (server.port, server.tls_port)
        timed_step("start_again", server.start_again)
        assert (server.port, server.tls_port) == ports
        assert server.whoami(dn, "pw \u00fc 1", "ldaps").lower() == expected
        timed_step("kill", server.kill)
        timed_step("add_user while stopped", server.add_user, "late", "late pw",
             scheme="cleartext")
        timed_step("start_again after kill", server.start_again)
        assert server.search_dns("(uid=m\u00fcller)") == [dn]
        assert server.whoami(server.user_dn("late"), "late pw").startswith("dn:")
    finally:
        timed_step("cleanup", server.cleanup)
    assert not os.path.exists(directory)
    print("ok")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--watchdog":
        run_watchdog(sys.argv[2], lambda directory: kill_and_wait(slapd_pid(directory)))
    else:
        _self_check()
