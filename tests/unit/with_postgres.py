#!/usr/bin/env python3
"""Runs a command against a real PostgreSQL of its own.

    with_postgres.py COMMAND [ARGS...]

Starts a throwaway PostgreSQL (tests/integration/pg_cluster.py) with one
database that holds popkit's schema, names it in the environment as
POPKIT_TEST_PG_CONNINFO (the role popkit, with grants.sql's rights, as
popkitd connects) and POPKIT_TEST_PG_ADMIN_CONNINFO (the superuser, to set
up and inspect), runs the command, stops the server and exits with the
command's status. For the Check tests of the postgres module.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))
import pg_cluster  # noqa: E402


def main() -> int:
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        return 64
    cluster = pg_cluster.PostgresCluster()
    try:
        cluster.start()
        conninfo = cluster.create_database()
        dbname = "popkit_test_1"
        env = dict(os.environ,
                   POPKIT_TEST_PG_CONNINFO=conninfo,
                   POPKIT_TEST_PG_ADMIN_CONNINFO=cluster.conninfo(dbname,
                                                                  pg_cluster.ADMIN_ROLE))
        return subprocess.run(sys.argv[1:], env=env).returncode
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    sys.exit(main())
