-- How far each projection has read the events table, in the global order
-- (transaction_id, position). A projection writes its view rows and this row in the same
-- transaction, so the two never disagree after a crash.
--
-- A projection that meets an event it cannot apply stops there: the failed_* columns name
-- the event, and the runner does not go past it until the projection is rebuilt.
CREATE TABLE projection_checkpoints (
    projection      text        NOT NULL,
    transaction_id  xid8        NOT NULL DEFAULT '0',
    position        bigint      NOT NULL DEFAULT 0,
    events_applied  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    failed_position bigint,
    failed_event    text,
    failure         text,
    failed_at       timestamptz,
    CONSTRAINT projection_checkpoints_pkey PRIMARY KEY (projection)
);
