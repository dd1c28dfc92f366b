-- popkit's PostgreSQL schema, version 1.
--
-- Load it once into the database popkitd and popkit-deliver connect to:
--     psql -v ON_ERROR_STOP=1 -d mail -f schema.sql
-- then give the role popkit connects as what it needs (grants.sql).
--
-- Every object lives in the schema "popkit", so the tables sit beside a
-- site's own without clashing. popkit.schema_version says which version of
-- this file a database holds; a later version ships upgrade-N.sql, which
-- takes a database from version N-1 to N in one transaction (README,
-- "Upgrading the schema").
BEGIN;

CREATE SCHEMA popkit;

CREATE TABLE popkit.schema_version (
  version integer NOT NULL
);
INSERT INTO popkit.schema_version (version) VALUES (1);

-- Users, for the auth role's default password_query. password holds any
-- secret popkitd reads: a crypt(3) string ($y$, $2b$, $6$, $5$), {PLAIN}...
-- or {SCRAM-SHA-256}... (popkit-passwd prints them). mailbox names the
-- mailbox the user reads; NULL means the user name. A NULL password locks
-- the user out.
CREATE TABLE popkit.users (
  name text PRIMARY KEY,
  password text,
  mailbox text
);

CREATE TABLE popkit.mailboxes (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL UNIQUE
);

-- One row per message. uid is the UIDL a client sees: stable for the life
-- of the message, unique in its mailbox, 1 to 70 characters in 0x21..0x7e
-- (RFC 1939). Deliveries get a random one; an import may keep the unique
-- ids of the old server, so clients that leave mail on the server do not
-- download everything again. size is the octet count of the message with
-- every line ending as CRLF (what STAT and LIST report), which can differ
-- from the raw bytes stored in message_chunks.
CREATE TABLE popkit.messages (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  mailbox_id bigint NOT NULL REFERENCES popkit.mailboxes (id) ON DELETE CASCADE,
  uid text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '')
    CHECK (uid ~ '^[!-~]{1,70}$'),
  size bigint NOT NULL CHECK (size >= 0),
  delivered_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (mailbox_id, uid)
);
-- The listing of a mailbox, in delivery order, is one index range scan.
CREATE INDEX messages_mailbox_order ON popkit.messages (mailbox_id, id);

-- The raw bytes of a message, in pieces: start is the offset of data's
-- first byte in the message. popkitd reads a message a piece at a time,
-- so a 50 MB message never sits whole in its memory, and popkit-deliver
-- writes one the same way. Pieces may have any size (popkit-deliver
-- writes 64 KiB ones) but must tile the message without gaps.
CREATE TABLE popkit.message_chunks (
  message_id bigint NOT NULL REFERENCES popkit.messages (id) ON DELETE CASCADE,
  start bigint NOT NULL CHECK (start >= 0),
  data bytea NOT NULL,
  PRIMARY KEY (message_id, start)
);

-- Mailbox locks, shared by every popkitd that uses this database. A lock
-- is a lease: its holder renews it while the session lives and deletes it
-- at the end; the lock of a popkitd that died expires at expires_at
-- (lock_ttl_s after the last renewal). Times are the database's clock, so
-- the hosts' clocks do not matter.
CREATE TABLE popkit.mailbox_locks (
  mailbox text PRIMARY KEY,
  holder text NOT NULL,       -- one popkitd worker: host, pid, worker, random
  session bigint NOT NULL,    -- the session of that worker
  expires_at timestamptz NOT NULL
);
CREATE INDEX mailbox_locks_holder ON popkit.mailbox_locks (holder);

COMMIT;
