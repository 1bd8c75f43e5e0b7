-- States of long aggregates at every 50th event, kept by the aggregate_states projection,
-- so that reading an aggregate as of a past time or version starts from the nearest
-- earlier state instead of the first event. The postgres-es snapshots table cannot serve
-- this: it holds only the latest state.
CREATE TABLE read_models.aggregate_snapshots (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    agency_id      uuid        NOT NULL,
    version        bigint      NOT NULL,
    -- When the event store recorded the event at `version`.
    recorded_at    timestamptz NOT NULL,
    state          jsonb       NOT NULL,
    CONSTRAINT aggregate_snapshots_pkey PRIMARY KEY (aggregate_type, aggregate_id, version)
);
