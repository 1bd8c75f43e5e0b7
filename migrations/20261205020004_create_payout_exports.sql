-- Payroll export batches. `content` is the CSV file sealed under a data key whose subject
-- is the export id, because it contains names. `ambassador_ids` and `referral_ids` list
-- the people named in it, for the access log of each download.
CREATE TABLE payout_exports (
    export_id      uuid        NOT NULL,
    agency_id      uuid        NOT NULL,
    created_by     uuid        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    payout_count   integer     NOT NULL CHECK (payout_count >= 0),
    content        text        NOT NULL,
    ambassador_ids uuid[]      NOT NULL,
    referral_ids   uuid[]      NOT NULL,
    CONSTRAINT payout_exports_pkey PRIMARY KEY (export_id)
);

CREATE INDEX payout_exports_agency ON payout_exports (agency_id, created_at);
