-- The rows of an uploaded timesheet and their outcomes. A row that failed to parse is
-- stored with outcome 'invalid' and its reason, and no values. A valid row waits with a
-- null outcome until the worker applies it; after a restart the worker resumes with the
-- rows that still have none.
-- `period_date` is week_ending (weekly files) or as_of (cumulative files), and `hours`
-- is hours or total_hours, in hundredths of an hour.
CREATE TABLE timesheet_rows (
    import_id          uuid   NOT NULL REFERENCES timesheet_imports (import_id) ON DELETE CASCADE,
    line               bigint NOT NULL,
    external_worker_id text,
    period_date        date,
    hours              bigint CHECK (hours >= 0),
    outcome            text   CHECK (outcome IN
        ('accepted', 'corrected', 'unchanged', 'unknown_worker', 'invalid')),
    reason             text,
    referral_id        uuid,
    -- True for a cumulative total lower than the one recorded before: the referral keeps
    -- it as a correction that a recruiter must review.
    needs_review       boolean NOT NULL DEFAULT false,
    CONSTRAINT timesheet_rows_pkey PRIMARY KEY (import_id, line)
);

CREATE INDEX timesheet_rows_pending ON timesheet_rows (import_id, line) WHERE outcome IS NULL;
