"""What tests/bench/run serves to both servers: users, maildirs, a certificate.

Every user is "bench<N>" with one password, in a passwd-file both servers
read. `{PLAIN}` is the scheme: Dovecot's passwd-file driver and popkit's
read it the same way, and it costs nothing to check, so the figures are
about the servers and not about a password hash.

The maildirs are written the way Postfix's local delivery writes them
(LF line ends, unique names without sizes, a quarter of the mail still in
new/ and the rest in cur/ with flags), so both servers compute CRLF sizes
themselves on a first login and keep them in their own caches after that.
Each server gets its own tree: popkit's maildir module writes popkit.lock
and popkit-sizes, Dovecot writes its index files and moves mail from new/
to cur/, and neither may see the other's state. The message files are
hard links shared by both trees, so their bytes are the same files in the
page cache for both.
"""

import os
import random
import time

USER_FORMAT = "bench%d"
PASSWORD = "bench-password"

# The RETR tests use this many users with ten 1 MiB messages each: a
# connection per user, since both servers lock a mailbox per session.
RETR_USERS = 4
RETR_MESSAGES = 10
RETR_MESSAGE_BYTES = 1 << 20
BIG_MESSAGE_BYTES = 100 << 20
HUGE_MAILDIR_MESSAGES = 100_000
SMALL_MESSAGES_PER_USER = 3

WORDS = """
the of and to in is that for it as was with be by on not he this are or his from at
which but have an they you were her she there been one all we their has would when if so
no will what can more about out up them some could other into than then now only its
time two may first over these like also new after any most made well where before must
through back years much your way down should because each just those people how too
little state good very make world still own see men work long get here between both life
being under never day same another know while last might us great old year off come
since against go came right used take three mailbox server message delivery queue report
invoice meeting schedule budget project review release network storage backup quarterly
customer account payment shipment attached regards
""".split()


class Layout:
    """Which user numbers hold what. Small users come first, so user i of
    a session test and slot i of the idle test are the same mailboxes."""

    def __init__(self, small_users: int):
        self.small_users = small_users
        self.retr_from = small_users
        self.big_user = small_users + RETR_USERS
        self.huge_user = self.big_user + 1
        self.users = self.huge_user + 1

    @staticmethod
    def name(number: int) -> str:
        return USER_FORMAT % number


def write_passwd_file(path: str, layout: Layout) -> None:
    with open(path, "w", encoding="ascii") as f:
        for i in range(layout.users):
            f.write("%s:{PLAIN}%s\n" % (layout.name(i), PASSWORD))
    # Dovecot's auth process reads it as its unprivileged internal user.
    os.chmod(path, 0o644)


def _header(rng: random.Random, number: int, subject: str) -> bytes:
    return ("From: Sender %d <sender%d@example.test>\n"
            "To: bench@example.test\n"
            "Subject: %s\n"
            "Date: Mon, 2 Feb 2026 10:%02d:%02d +0000\n"
            "Message-ID: <%d.%d@example.test>\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=us-ascii\n"
            "\n" % (number, number, subject, rng.randrange(60), rng.randrange(60),
                    number, rng.randrange(1 << 30))).encode("ascii")


def text_body(rng: random.Random, size: int) -> bytes:
    """About size bytes of prose in paragraphs of lines under 78
    characters, cut at a line end. Some lines start with a dot (an
    indented list, an ellipsis, a lone "." as a sign-off): those are
    the lines a server must dot-stuff."""
    out = []
    total = 0
    line_number = 0
    while total < size:
        line_number += 1
        if line_number % 37 == 0:
            line = rng.choice((".", "..", ". point made above", "...and so on",
                               ".hidden line"))
        elif line_number % 11 == 0:
            line = ""
        else:
            words = []
            length = 0
            target = rng.randrange(50, 76)
            while length < target:
                word = rng.choice(WORDS)
                words.append(word)
                length += len(word) + 1
            line = " ".join(words)
        encoded = line.encode("ascii") + b"\n"
        out.append(encoded)
        total += len(encoded)
    return b"".join(out)


def message(rng: random.Random, number: int, subject: str, size: int) -> bytes:
    """A message of exactly size raw bytes (LF line ends)."""
    header = _header(rng, number, subject)
    body = text_body(rng, size - len(header))
    body = body[:size - len(header)]
    return header + body[:-1] + b"\n" if body else header


class MaildirWriter:
    """Writes message files into a user's maildir in both trees."""

    def __init__(self, roots):
        self.roots = roots
        self.sequence = 0
        self.clock = int(time.time()) - 86400

    def user_dirs(self, user: str) -> None:
        for root in self.roots:
            for sub in ("new", "cur", "tmp"):
                os.makedirs(os.path.join(root, user, sub), exist_ok=True)

    def add(self, user: str, data: bytes = None, source: str = None) -> str:
        """Adds one message (bytes, or a file to link) and returns the path
        of the first tree's file, for the next user sharing it."""
        self.sequence += 1
        # Postfix's form (time.VdevIinode_Mcounter.host) without ,S= or ,W=.
        base = "%d.V801I%xM%d.bench" % (self.clock + self.sequence // 100, self.sequence,
                                      self.sequence % 1000000)
        if self.sequence % 4 == 0:
            relative = os.path.join(user, "new", base)
        else:
            relative = os.path.join(user, "cur", base + ":2,S")
        first = os.path.join(self.roots[0], relative)
        if source is not None:
            os.link(source, first)
        else:
            fd = os.open(first, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        for root in self.roots[1:]:
            os.link(first, os.path.join(root, relative))
        return first


def build_maildirs(roots, layout: Layout, log) -> None:
    """Fills every user's maildir in each of roots (one tree per server)."""
    rng = random.Random(20260202)
    writer = MaildirWriter(roots)

    started = time.monotonic()
    small = [message(rng, i, "note %d" % i, rng.randrange(1500, 4000)) for i in range(50)]
    for i in range(layout.small_users):
        user = layout.name(i)
        writer.user_dirs(user)
        for k in range(SMALL_MESSAGES_PER_USER):
            writer.add(user, small[(i * SMALL_MESSAGES_PER_USER + k) % len(small)])
    log("maildirs: %d users with %d small messages each (%.1f s)" %
        (layout.small_users, SMALL_MESSAGES_PER_USER, time.monotonic() - started))

    started = time.monotonic()
    retr = [message(rng, 1000 + k, "report part %d" % k, RETR_MESSAGE_BYTES)
            for k in range(RETR_MESSAGES)]
    first_paths = []
    for u in range(RETR_USERS):
        user = layout.name(layout.retr_from + u)
        writer.user_dirs(user)
        for k, data in enumerate(retr):
            if u == 0:
                first_paths.append(writer.add(user, data))
            else:
                writer.add(user, source=first_paths[k])
    log("maildirs: %d users with %d messages of 1 MiB (%.1f s)" %
        (RETR_USERS, RETR_MESSAGES, time.monotonic() - started))

    started = time.monotonic()
    user = layout.name(layout.big_user)
    writer.user_dirs(user)
    header = _header(rng, 2000, "a 100 MB message")
    block = text_body(rng, 1 << 20)
    block = block[:block.rindex(b"\n", 0, (1 << 20) - 1) + 1]
    repeats = (BIG_MESSAGE_BYTES - len(header)) // len(block)
    tail = text_body(rng, BIG_MESSAGE_BYTES - len(header) - repeats * len(block))
    tail = tail[:BIG_MESSAGE_BYTES - len(header) - repeats * len(block) - 1] + b"\n"
    writer.add(user, header + block * repeats + tail)
    log("maildirs: one message of %d MiB (%.1f s)" %
        (BIG_MESSAGE_BYTES >> 20, time.monotonic() - started))

    started = time.monotonic()
    user = layout.name(layout.huge_user)
    writer.user_dirs(user)
    pool = [message(rng, 3000 + k, "list item %d" % k, rng.randrange(600, 3000)) for k in range(64)]
    for k in range(HUGE_MAILDIR_MESSAGES):
        writer.add(user, pool[k % len(pool)])
    log("maildirs: one user with %d messages (%.1f s)" %
        (HUGE_MAILDIR_MESSAGES, time.monotonic() - started))


def chown_tree(root: str, uid: int, gid: int) -> None:
    """Gives a tree to the user the servers' mail processes run as."""
    os.chown(root, uid, gid)
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)
