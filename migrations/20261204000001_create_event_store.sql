-- The event and snapshot tables in the shape postgres-es 0.5.0 reads and writes: it names
-- these columns in its own SQL, so they must keep these names and types.
--
-- payload and metadata are `json`, not `jsonb`: `json` keeps the text exactly as written,
-- which lets a hash chain cover the stored bytes; `jsonb` would reorder keys.
CREATE TABLE events (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL CHECK (sequence >= 1),
    event_type     text   NOT NULL,
    event_version  text   NOT NULL,
    payload        json   NOT NULL,
    metadata       json   NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE TABLE snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint NOT NULL CHECK (current_snapshot >= 1),
    payload          json   NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (aggregate_type, aggregate_id)
);
