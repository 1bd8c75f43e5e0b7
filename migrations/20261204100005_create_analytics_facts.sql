-- The analytics schema: fact tables for analysts and BI tools, built by the analytics
-- projection. It contains ids, codes, dates, counts and amounts only: no names, e-mail
-- addresses, phone numbers, external ids, sealed ciphertext or free-text reasons, so
-- that a read-only BI role can query it without seeing personal data.
--
-- The tables follow the read model rules (no identity or generated columns, no foreign
-- keys, every column written by the projection), because the projection runner rebuilds
-- them the same way.
CREATE SCHEMA analytics;

-- One row per ambassador, for the ambassador's current kind and activity.
CREATE TABLE analytics.ambassador_facts (
    ambassador_id  uuid        NOT NULL,
    agency_id      uuid        NOT NULL,
    kind           text        NOT NULL,
    active         boolean     NOT NULL,
    enrolled_at    timestamptz NOT NULL,
    deactivated_at timestamptz,
    CONSTRAINT ambassador_facts_pkey PRIMARY KEY (ambassador_id)
);
CREATE INDEX ambassador_facts_agency ON analytics.ambassador_facts (agency_id);

-- One row per referral with the time it reached each funnel stage.
CREATE TABLE analytics.referral_facts (
    referral_id              uuid        NOT NULL,
    agency_id                uuid        NOT NULL,
    program_id               uuid        NOT NULL,
    ambassador_id            uuid        NOT NULL,
    -- The ambassador's kind when the referral was submitted.
    ambassador_kind          text        NOT NULL,
    -- The program's currency, which is fixed when the program is created.
    currency                 text        NOT NULL,
    submitted_at             timestamptz NOT NULL,
    contacted_at             timestamptz,
    interviewing_at          timestamptz,
    hired_at                 timestamptz,
    -- When the first milestone other than the hire itself (hours or days worked) was
    -- reached, payable or not.
    first_bonus_milestone_at timestamptz,
    status                   text        NOT NULL,
    eligible                 boolean     NOT NULL,
    ineligible_reason        text,
    -- Recorded as a duplicate of a referral that already owned the candidate.
    duplicate                boolean     NOT NULL,
    CONSTRAINT referral_facts_pkey PRIMARY KEY (referral_id)
);
CREATE INDEX referral_facts_agency_program ON analytics.referral_facts (agency_id, program_id);
CREATE INDEX referral_facts_agency_ambassador ON analytics.referral_facts (agency_id, ambassador_id);

-- One row per payout.
CREATE TABLE analytics.payout_facts (
    payout_id     uuid        NOT NULL,
    agency_id     uuid        NOT NULL,
    program_id    uuid        NOT NULL,
    referral_id   uuid        NOT NULL,
    ambassador_id uuid        NOT NULL,
    recipient     text        NOT NULL,
    -- Milestone key such as hours_worked:160.00:ambassador.
    milestone     text        NOT NULL,
    -- Minor units of currency.
    amount        bigint      NOT NULL,
    currency      text        NOT NULL,
    status        text        NOT NULL,
    requested_at  timestamptz NOT NULL,
    approved_at   timestamptz,
    exported_at   timestamptz,
    paid_on       date,
    -- When the payout was rejected, voided or reversed.
    closed_at     timestamptz,
    -- Reason code of a voided payout, such as annual_cap_reached.
    void_reason   text,
    CONSTRAINT payout_facts_pkey PRIMARY KEY (payout_id)
);
CREATE INDEX payout_facts_agency_program ON analytics.payout_facts (agency_id, program_id);
CREATE INDEX payout_facts_agency_ambassador ON analytics.payout_facts (agency_id, ambassador_id);
