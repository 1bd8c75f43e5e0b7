-- Subject requests (access and erasure) of one agency. The export of an access request
-- is sealed under a data key of its own (subject = the request id), and the keyed
-- hashes of the request let a later erasure of the same person destroy that export too.
CREATE TABLE subject_requests (
    request_id    uuid        NOT NULL,
    agency_id     uuid        NOT NULL,
    kind          text        NOT NULL,
    status        text        NOT NULL,
    requested_by  uuid        NOT NULL,
    contact_keys  text[]      NOT NULL,
    subjects      integer     NOT NULL,
    sealed_export text,
    requested_at  timestamptz NOT NULL,
    completed_at  timestamptz,
    CONSTRAINT subject_requests_pkey PRIMARY KEY (request_id),
    CONSTRAINT subject_requests_kind_check CHECK (kind IN ('access', 'erasure')),
    CONSTRAINT subject_requests_status_check CHECK (status IN ('completed', 'erased')),
    CONSTRAINT subject_requests_sealed_export CHECK (sealed_export LIKE 'v1.%')
);
CREATE INDEX subject_requests_agency ON subject_requests (agency_id, requested_at);
