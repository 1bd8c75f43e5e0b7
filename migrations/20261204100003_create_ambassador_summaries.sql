-- Ambassador summaries and earnings, for the ambassador's dashboard and the leaderboard
-- (summaries ordered by referrals_hired, then by paid_amount in one currency).
--
-- Referral and payout events after the first do not name the ambassador, so the
-- projection keeps two lookup tables of its own (ambassador_summary_referrals and
-- ambassador_summary_payouts) and recounts an ambassador's figures from them after each
-- change. It never reads another projection's tables, because those may be at another
-- position in the event order, or absent during a rebuild.
CREATE TABLE read_models.ambassador_summaries (
    ambassador_id       uuid        NOT NULL,
    agency_id           uuid        NOT NULL,
    kind                text        NOT NULL,
    active              boolean     NOT NULL,
    -- Every referral the ambassador submitted, duplicates included.
    referrals_submitted integer     NOT NULL,
    referrals_duplicate integer     NOT NULL,
    -- Referrals whose candidate was hired, even if the placement ended later.
    referrals_hired     integer     NOT NULL,
    -- Milestones reached by the ambassador's referrals, for any recipient.
    milestones_reached  integer     NOT NULL,
    -- Counts of the ambassador's own bonuses (recipient ambassador) by payout status:
    -- pending approval, approved or exported (waiting for payroll), and paid.
    payouts_pending     integer     NOT NULL,
    payouts_approved    integer     NOT NULL,
    payouts_paid        integer     NOT NULL,
    updated_at          timestamptz NOT NULL,
    CONSTRAINT ambassador_summaries_pkey PRIMARY KEY (ambassador_id)
);
CREATE INDEX ambassador_summaries_agency_hires
    ON read_models.ambassador_summaries (agency_id, referrals_hired DESC, ambassador_id);

-- Money the ambassador earned, per currency, in minor units. Bonuses paid to candidates
-- (two-sided programs) are not the ambassador's and are left out.
CREATE TABLE read_models.ambassador_earnings (
    ambassador_id  uuid        NOT NULL,
    currency       text        NOT NULL,
    agency_id      uuid        NOT NULL,
    -- Pending approval.
    pending_amount bigint      NOT NULL,
    -- Approved, exported or paid; a rejected, voided or reversed payout no longer counts.
    earned_amount  bigint      NOT NULL,
    -- Paid and not reversed.
    paid_amount    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT ambassador_earnings_pkey PRIMARY KEY (ambassador_id, currency)
);

-- Lookup: the ambassador and progress of each referral, for the recounts above.
CREATE TABLE read_models.ambassador_summary_referrals (
    referral_id        uuid    NOT NULL,
    ambassador_id      uuid    NOT NULL,
    duplicate          boolean NOT NULL,
    hired              boolean NOT NULL,
    milestones_reached integer NOT NULL,
    CONSTRAINT ambassador_summary_referrals_pkey PRIMARY KEY (referral_id)
);
CREATE INDEX ambassador_summary_referrals_ambassador
    ON read_models.ambassador_summary_referrals (ambassador_id);

-- Lookup: the ambassador, amount and status of each payout, for the recounts above.
CREATE TABLE read_models.ambassador_summary_payouts (
    payout_id     uuid   NOT NULL,
    ambassador_id uuid   NOT NULL,
    recipient     text   NOT NULL,
    amount        bigint NOT NULL,
    currency      text   NOT NULL,
    status        text   NOT NULL,
    CONSTRAINT ambassador_summary_payouts_pkey PRIMARY KEY (payout_id)
);
CREATE INDEX ambassador_summary_payouts_ambassador
    ON read_models.ambassador_summary_payouts (ambassador_id);
