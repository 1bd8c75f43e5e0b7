-- Reservations for rules that span aggregates and must hold across processes.

-- Which referral currently claims a candidate, per keyed hash of the candidate's e-mail or
-- phone. The row is a lock and a pointer, not the truth: whether the claiming referral still
-- owns the candidate (window open, or hired) is decided from its events. contact_key is an
-- HMAC, never the plaintext address or number.
CREATE TABLE candidate_claims (
    agency_id   uuid        NOT NULL,
    contact_key text        NOT NULL,
    referral_id uuid        NOT NULL,
    claimed_at  timestamptz NOT NULL,
    CONSTRAINT candidate_claims_pkey PRIMARY KEY (agency_id, contact_key)
);
CREATE INDEX candidate_claims_referral ON candidate_claims (referral_id);

-- Bonuses counted against an ambassador's rolling twelve-month cap, one row per approved
-- payout. Reserving takes a transaction-scoped advisory lock per ambassador, so two
-- approvals at once cannot both take the last place.
CREATE TABLE bonus_cap_reservations (
    agency_id     uuid        NOT NULL,
    ambassador_id uuid        NOT NULL,
    payout_id     uuid        NOT NULL,
    reserved_at   timestamptz NOT NULL,
    CONSTRAINT bonus_cap_reservations_pkey PRIMARY KEY (payout_id)
);
CREATE INDEX bonus_cap_reservations_ambassador
    ON bonus_cap_reservations (agency_id, ambassador_id, reserved_at);
