-- Due dates of the scheduled referral rules, kept by the referral_schedule projection so
-- the jobs read only rows that are due instead of loading every referral.
--
-- The rows hold ids, dates and day counts only, no personal data. The schema is the
-- workers' own: analysts' read models live in read_models and analytics.
CREATE SCHEMA scheduling;

CREATE TABLE scheduling.referral_schedule (
    referral_id     uuid        NOT NULL,
    agency_id       uuid        NOT NULL,
    -- The hire deadline while the referral waits for a hire; NULL once it is hired or
    -- has ended.
    expires_at      timestamptz,
    start_date      date,
    end_date        date,
    -- Thresholds in days of the days_employed milestones not reached yet.
    days_thresholds integer[]   NOT NULL DEFAULT '{}',
    -- The day the next days_employed milestone falls due: start_date plus the lowest
    -- threshold, or NULL when none is left or the placement ended before it.
    days_due_on     date,
    CONSTRAINT referral_schedule_pkey PRIMARY KEY (referral_id)
);
-- Partial indexes: the jobs scan only due rows, in due order, a page at a time.
CREATE INDEX referral_schedule_expiry
    ON scheduling.referral_schedule (expires_at, referral_id) WHERE expires_at IS NOT NULL;
CREATE INDEX referral_schedule_days_due
    ON scheduling.referral_schedule (days_due_on, referral_id) WHERE days_due_on IS NOT NULL;
