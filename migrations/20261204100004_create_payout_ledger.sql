-- The payout ledger: one row per payout with its status and the dates of each step, for
-- finance's approval queue (pending payouts of an agency, oldest first), export batches
-- and the payment history.
--
-- hold_reason and closed_reason contain what a user typed as the reason for a hold, a
-- rejection or a reversal (a void stores its reason code instead). That text is checked
-- for SSN and card number shapes when it is entered, and it is never copied to the
-- analytics schema.
-- NOTE: the events store these reasons as plaintext too, so erasing a person's key does
-- not remove a name that a user typed into one.
CREATE TABLE read_models.payout_ledger (
    payout_id      uuid        NOT NULL,
    agency_id      uuid        NOT NULL,
    referral_id    uuid        NOT NULL,
    ambassador_id  uuid        NOT NULL,
    program_id     uuid        NOT NULL,
    recipient      text        NOT NULL,
    -- Milestone key such as hours_worked:160.00:ambassador.
    milestone      text        NOT NULL,
    -- Minor units of currency.
    amount         bigint      NOT NULL,
    currency       text        NOT NULL,
    status         text        NOT NULL,
    held           boolean     NOT NULL,
    hold_reason    text,
    requested_at   timestamptz NOT NULL,
    -- 'user' or 'system'; requested_by is then the user id or the job name. The API
    -- compares a manual payout's requesting user with the approver.
    requester_kind text        NOT NULL,
    requested_by   text        NOT NULL,
    approved_at    timestamptz,
    approved_by    uuid,
    exported_at    timestamptz,
    batch_id       uuid,
    paid_on        date,
    paid_reference text,
    -- When and why the payout was rejected, voided or reversed.
    closed_at      timestamptz,
    closed_reason  text,
    version        bigint      NOT NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT payout_ledger_pkey PRIMARY KEY (payout_id)
);
CREATE INDEX payout_ledger_approval_queue
    ON read_models.payout_ledger (agency_id, status, requested_at, payout_id);
CREATE INDEX payout_ledger_referral ON read_models.payout_ledger (agency_id, referral_id);
CREATE INDEX payout_ledger_ambassador
    ON read_models.payout_ledger (agency_id, ambassador_id, requested_at, payout_id);
CREATE INDEX payout_ledger_batch ON read_models.payout_ledger (agency_id, batch_id);
