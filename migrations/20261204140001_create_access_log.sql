-- Who read whose personal data, and when: one row for every response that revealed a
-- subject's decrypted fields. Rows hold ids only, never the data that was read.
--
-- Like events, the log is append-only: the triggers reject UPDATE, DELETE and TRUNCATE for
-- every role, the table owner included, so a reader cannot hide their own reads.
CREATE TABLE access_log (
    id           uuid        NOT NULL,
    agency_id    uuid        NOT NULL,
    user_id      uuid        NOT NULL,
    -- The role the user read in, such as `recruiter`.
    role         text        NOT NULL,
    subject_type text        NOT NULL,
    subject_id   uuid        NOT NULL,
    -- The method and matched route, such as `GET /v1/referrals/{id}`.
    endpoint     text        NOT NULL,
    request_id   uuid        NOT NULL,
    accessed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT access_log_pkey PRIMARY KEY (id),
    CONSTRAINT access_log_subject_type_check
        CHECK (subject_type IN ('candidate', 'ambassador', 'user'))
);

-- Lists page newest first by (accessed_at, id) within an agency.
CREATE INDEX access_log_agency_order ON access_log (agency_id, accessed_at DESC, id DESC);
CREATE INDEX access_log_subject ON access_log (agency_id, subject_id);

CREATE FUNCTION reject_access_log_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'access_log is append-only: % is not allowed on table access_log', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER access_log_reject_update_delete
    BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION reject_access_log_change();

CREATE TRIGGER access_log_reject_truncate
    BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION reject_access_log_change();
