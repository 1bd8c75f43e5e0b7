-- The current state of every program, ambassador, referral and payout, as the domain
-- serializes it, so that reading one resource is a single row lookup instead of a replay
-- of its events. Kept by the aggregate_states projection like every read model (no
-- identity, generated or default-dependent columns). Personal fields inside the state are
-- sealed ciphertext, as in the events.
CREATE TABLE read_models.aggregate_states (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    agency_id      uuid        NOT NULL,
    -- Sequence of the last event applied; compared with the event store to detect lag.
    version        bigint      NOT NULL,
    state          jsonb       NOT NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT aggregate_states_pkey PRIMARY KEY (aggregate_type, aggregate_id)
);
