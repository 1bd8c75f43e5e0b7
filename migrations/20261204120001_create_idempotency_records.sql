-- The first response to each command sent with an Idempotency-Key, so a repeat returns it
-- instead of running the command again. Scoped per agency and user: two users may use the
-- same key. status is NULL while the first request is still running. The body can hold
-- personal data, so it is stored sealed (AES-256-GCM-SIV under a data key of the agency's
-- idempotency subject), and records expire after a day.
CREATE TABLE idempotency_records (
    agency_id    uuid        NOT NULL,
    user_id      uuid        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    status       smallint,
    headers      jsonb,
    sealed_body  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_records_pkey PRIMARY KEY (agency_id, user_id, key)
);
CREATE INDEX idempotency_records_created ON idempotency_records (created_at);
