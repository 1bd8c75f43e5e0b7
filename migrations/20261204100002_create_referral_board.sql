-- The referral board: one row per referral with its pipeline status, eligibility, dates
-- and hours, for recruiters' lists and the ambassador's "my referrals" page.
--
-- The board is read a page at a time, newest or oldest first, with keyset pagination on
-- (submitted_at, referral_id). Each filter index ends with those two columns, so a
-- filtered page is read in order from the index without sorting.
CREATE TABLE read_models.referral_board (
    referral_id           uuid          NOT NULL,
    agency_id             uuid          NOT NULL,
    program_id            uuid          NOT NULL,
    ambassador_id         uuid          NOT NULL,
    recruiter_id          uuid,
    status                text          NOT NULL,
    eligible              boolean       NOT NULL,
    -- Machine-readable code such as prior_contact; NULL while eligible.
    ineligible_reason     text,
    -- The referral that owned the candidate when this one was recorded as a duplicate.
    duplicate_of          uuid,
    candidate_name_sealed text          NOT NULL,
    submitted_at          timestamptz   NOT NULL,
    contacted_at          timestamptz,
    interviewing_at       timestamptz,
    hired_at              timestamptz,
    start_date            date,
    end_date              date,
    hours_total           numeric(12,2) NOT NULL,
    -- Milestones of the bonus schedule reached so far, payable or not.
    milestones_reached    integer       NOT NULL,
    version               bigint        NOT NULL,
    updated_at            timestamptz   NOT NULL,
    CONSTRAINT referral_board_pkey PRIMARY KEY (referral_id),
    CONSTRAINT referral_board_candidate_name_sealed CHECK (candidate_name_sealed LIKE 'v1.%')
);
CREATE INDEX referral_board_agency_page
    ON read_models.referral_board (agency_id, submitted_at, referral_id);
CREATE INDEX referral_board_agency_status
    ON read_models.referral_board (agency_id, status, submitted_at, referral_id);
CREATE INDEX referral_board_agency_program
    ON read_models.referral_board (agency_id, program_id, submitted_at, referral_id);
CREATE INDEX referral_board_agency_ambassador
    ON read_models.referral_board (agency_id, ambassador_id, submitted_at, referral_id);
CREATE INDEX referral_board_agency_recruiter
    ON read_models.referral_board (agency_id, recruiter_id, submitted_at, referral_id);
