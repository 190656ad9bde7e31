-- name: migrations_bootstrap
-- Creates schema sink and its migrations table when missing, before applied migrations are read.
CREATE SCHEMA IF NOT EXISTS sink;
CREATE TABLE IF NOT EXISTS sink.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_table_exists
-- Whether the migrations table exists (a database never migrated has none).
SELECT to_regclass('sink.schema_migrations') IS NOT NULL;

-- name: applied_migrations
-- The migrations applied so far, with the checksum of each file as it was applied.
SELECT version, name, checksum FROM sink.schema_migrations;

-- name: record_migration
-- Records one applied migration, in the transaction that applied it.
INSERT INTO sink.schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: ping
-- The cheapest round trip: is the database answering?
SELECT 1;

-- name: database_exists
-- Whether a database of that name exists on the server (the embedded one).
SELECT 1 FROM pg_database WHERE datname = $1;

-- name: backend_pid
-- The server backend serving this connection: two client connections sharing one means a pooler.
SELECT pg_backend_pid();

-- name: advisory_lock
-- Waits for the session advisory lock $1: concurrent migrators take turns (a direct session).
SELECT pg_advisory_lock($1);

-- name: advisory_unlock
-- Releases the session advisory lock $1 that advisory_lock took.
SELECT pg_advisory_unlock($1);
