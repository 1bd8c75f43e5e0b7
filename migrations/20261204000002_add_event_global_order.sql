-- A global order over all events, which postgres-es does not provide.
--
-- `position` is assigned when a row is inserted, but transactions commit in another order:
-- a reader that only remembered the highest position it has seen would skip an event that
-- a slower transaction commits later with a lower position. Readers therefore also use the
-- inserting transaction's id: they read only rows whose transaction_id is below the oldest
-- transaction still running (pg_snapshot_xmin(pg_current_snapshot())), and remember the
-- pair (transaction_id, position) as their checkpoint.
ALTER TABLE events
    ADD COLUMN transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN position bigint GENERATED ALWAYS AS IDENTITY,
    -- clock_timestamp(), not now(): the time of the insert itself, not of the transaction start.
    ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Every event belongs to one agency, named in its metadata by the application. A missing
    -- or malformed agency_id makes the insert fail instead of creating an event nobody owns.
    ADD COLUMN agency_id uuid NOT NULL GENERATED ALWAYS AS ((metadata ->> 'agency_id')::uuid) STORED;

CREATE UNIQUE INDEX events_position_key ON events (position);
CREATE INDEX events_transaction_order ON events (transaction_id, position);
CREATE INDEX events_agency_order ON events (agency_id, position);
