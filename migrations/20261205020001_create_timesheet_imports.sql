-- One uploaded timesheet file. Its rows are staged in timesheet_rows and applied by the
-- background worker, which locks the import row (FOR UPDATE SKIP LOCKED) while it works,
-- so several server instances never process one import at once.
-- The file is staged in one transaction: an import row exists only with all its rows.
CREATE TABLE timesheet_imports (
    import_id      uuid        NOT NULL,
    agency_id      uuid        NOT NULL,
    shape          text        NOT NULL CHECK (shape IN ('weekly', 'cumulative')),
    uploaded_by    uuid        NOT NULL,
    uploaded_role  text        NOT NULL,
    request_id     uuid        NOT NULL,
    correlation_id uuid        NOT NULL,
    rows_total     bigint      NOT NULL CHECK (rows_total >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Set when every row has an outcome; the worker picks imports where it is null.
    finished_at    timestamptz,
    CONSTRAINT timesheet_imports_pkey PRIMARY KEY (import_id)
);

CREATE INDEX timesheet_imports_unfinished ON timesheet_imports (created_at, import_id)
    WHERE finished_at IS NULL;
