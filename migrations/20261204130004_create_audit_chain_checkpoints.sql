-- How far the last successful hash-chain verification of each agency got, so the next
-- run can check only the events after `position`. events_checked is the number of the
-- agency's events at or below `position`; a run that counts another number (an event
-- committed late below the checkpoint, or a removed one) verifies the agency in full.
CREATE TABLE audit_chain_checkpoints (
    agency_id      uuid        NOT NULL,
    position       bigint      NOT NULL,
    events_checked bigint      NOT NULL,
    verified_at    timestamptz NOT NULL,
    CONSTRAINT audit_chain_checkpoints_pkey PRIMARY KEY (agency_id)
);
