#!/usr/bin/env python3
"""Runs a command against a real slapd of its own.

    with_slapd.py COMMAND [ARGS...]

Starts a throwaway OpenLDAP server (tests/integration/slapd_server.py) whose
entries only the service account and the entry itself may read (an
anonymous search finds nothing), adds the users below, names it in the
environment, runs the command, stops the server and exits with the
command's status. For the Check tests of the ldap-auth module.

Environment given to the command:
    POPKIT_TEST_LDAP_URI            ldap://127.0.0.1:PORT (StartTLS offered)
    POPKIT_TEST_LDAPS_URI           ldaps://127.0.0.1:TLS_PORT
    POPKIT_TEST_LDAP_CA             the CA that signed slapd's certificate
    POPKIT_TEST_LDAP_OTHER_CA       a CA that signed nothing here
    POPKIT_TEST_LDAP_PID            slapd's pid (SIGSTOP/SIGCONT it)
    POPKIT_TEST_LDAP_LOG            slapd's log (every operation, "stats")
    POPKIT_TEST_LDAP_BASE           ou=people,dc=example,dc=test
    POPKIT_TEST_LDAP_BIND_DN        the service account
    POPKIT_TEST_LDAP_BIND_PASSWORD  its password
    LDAPCONF, LDAPRC                /dev/null: no ldap.conf of the machine
                                    or user changes what libldap does

Users, each uid=NAME under ou=people with the password "NAME pw":
    alice     mail alice.box@example.test (an identity_attribute)
    bob       no mail
    müller    a UTF-8 name
    o'hara
    *         a name that is a wildcard if not escaped
    many      two mail values
    twin      twice: under ou=people and under ou=staff,ou=people
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))
import slapd_server  # noqa: E402

PEOPLE = "ou=people," + slapd_server.SUFFIX


def users_ldif(server: slapd_server.SlapdServer) -> str:
    def user(uid, parent=PEOPLE, **attributes):
        return server.user_ldif(uid, uid + " pw", parent=parent, **attributes)[1]

    return "".join([
        user("alice", mail="alice.box@example.test"),
        user("bob"),
        user("m\u00fcller"),
        user("o'hara"),
        user("*"),
        user("many", mail=["many.one@example.test", "many.two@example.test"]),
        user("twin"),
        user("twin", parent="ou=staff," + PEOPLE),
    ])


def main() -> int:
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        return 64
    server = slapd_server.SlapdServer(anonymous_search=False)
    try:
        server.start()
        server.add_entries(users_ldif(server))
        env = dict(os.environ,
                   POPKIT_TEST_LDAP_URI=server.uri,
                   POPKIT_TEST_LDAPS_URI=server.ldaps_uri,
                   POPKIT_TEST_LDAP_CA=server.ca_file,
                   POPKIT_TEST_LDAP_OTHER_CA=server.other_ca_file,
                   POPKIT_TEST_LDAP_PID=str(server.process.pid),
                   POPKIT_TEST_LDAP_LOG=server.log_path,
                   POPKIT_TEST_LDAP_BASE=PEOPLE,
                   POPKIT_TEST_LDAP_BIND_DN=server.service_dn,
                   POPKIT_TEST_LDAP_BIND_PASSWORD=server.service_password,
                   LDAPCONF="/dev/null",
                   LDAPRC="/dev/null")
        env.pop("LDAPNOINIT", None)
        return subprocess.run(sys.argv[1:], env=env).returncode
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
