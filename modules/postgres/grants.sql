-- What the role popkitd and popkit-deliver connect as may do, and no more.
--     psql -v ON_ERROR_STOP=1 -d mail -v role=popkit -f grants.sql
-- The role reads users but cannot change them; it reads, adds and deletes
-- messages; it takes and gives back mailbox locks.
GRANT USAGE ON SCHEMA popkit TO :"role";
GRANT SELECT ON popkit.schema_version, popkit.users TO :"role";
GRANT SELECT, INSERT ON popkit.mailboxes TO :"role";
GRANT SELECT, INSERT, DELETE ON popkit.messages, popkit.message_chunks TO :"role";
-- popkit-deliver writes a message's size once its last byte is in.
GRANT UPDATE (size) ON popkit.messages TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON popkit.mailbox_locks TO :"role";
