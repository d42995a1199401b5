-- A psql session against ProgressDB (run by src/tests/pg.rs): insert,
-- page a timeline, edit, delete, and errors that leave the session usable.
\set VERBOSITY verbose
INSERT INTO threads (title, key) VALUES ('psql thread', 'psql-t') RETURNING key, title, author;
INSERT INTO messages (thread, body) VALUES ('psql-t', '{"text":"one"}') RETURNING key \gset one_
INSERT INTO messages (thread, body) VALUES ('psql-t', '{"text":"two"}') RETURNING key \gset two_
INSERT INTO messages (thread, body) VALUES ('psql-t', '{"text":"three"}') RETURNING key \gset three_
\echo newest page
SELECT body, version FROM messages WHERE thread = 'psql-t' ORDER BY created_ts DESC LIMIT 2;
\echo older page
SELECT body FROM messages WHERE thread = 'psql-t' AND key < :'three_key' ORDER BY created_ts DESC LIMIT 2;
UPDATE messages SET body = '{"text":"one, edited"}' WHERE thread = 'psql-t' AND key = :'one_key' RETURNING body, version;
DELETE FROM messages WHERE thread = 'psql-t' AND key = :'two_key';
\echo after the delete
SELECT body, deleted FROM messages WHERE thread = 'psql-t' ORDER BY created_ts DESC LIMIT 10;
\echo oldest page
SELECT body FROM messages WHERE thread = 'psql-t' ORDER BY created_ts LIMIT 1;
SET progressdb.include_deleted = on;
SHOW progressdb.include_deleted;
SELECT body, deleted FROM messages WHERE thread = 'psql-t' ORDER BY created_ts DESC LIMIT 10;
RESET progressdb.include_deleted;
SELECT * FROM nowhere;
DROP TABLE messages;
SELECT key FROM messages WHERE thread = 'psql-t' LIMIT 'many';
\echo still usable
SELECT title, author FROM threads WHERE key = 'psql-t';
SELECT current_user;
UPDATE threads SET title = 'renamed' WHERE key = 'psql-t' RETURNING title;
DELETE FROM threads WHERE key = 'psql-t';
\echo after deleting the thread
SELECT title FROM threads WHERE key = 'psql-t';
SELECT body FROM messages WHERE thread = 'psql-t' ORDER BY created_ts DESC LIMIT 10;
\echo describe
\d
\d messages
\dv
