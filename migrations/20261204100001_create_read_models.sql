-- The read_models schema and its catalog tables: programs and ambassadors as the API
-- lists them. Every read model table is written only by its projection (see the
-- referrals-projections crate), which rebuilds it from the events at any time, so
-- these tables contain no fact that is not in the events.
--
-- Rules every read model table follows, because the projection runner rebuilds a table
-- by creating a copy with `CREATE TABLE ... (LIKE live INCLUDING ALL)` in another schema,
-- filling it from the first event, and copying its rows back with
-- `INSERT INTO live SELECT * FROM copy`:
-- * no identity, serial or generated columns, and no foreign keys between tables;
-- * the projection writes every column itself, so no column relies on a default.
-- Every value comes from the events: business dates from the event payloads, and
-- updated_at from the time the event store recorded the last event applied to the row.
--
-- Personal fields appear only as sealed ciphertext (`v1.` followed by the encrypted
-- bytes), where the API must show a name. The CHECK constraints reject any value without
-- the `v1.` prefix, which catches a plaintext name or address written by mistake.
CREATE SCHEMA read_models;

CREATE TABLE read_models.programs (
    program_id    uuid        NOT NULL,
    agency_id     uuid        NOT NULL,
    name          text        NOT NULL,
    currency      text        NOT NULL,
    terms_version integer     NOT NULL,
    -- The terms in force, in the domain's JSON form (`Terms`).
    terms         jsonb       NOT NULL,
    open          boolean     NOT NULL,
    -- Sequence of the program's last event, for optimistic concurrency in the API.
    version       bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT programs_pkey PRIMARY KEY (program_id)
);
CREATE INDEX programs_agency ON read_models.programs (agency_id, created_at, program_id);

CREATE TABLE read_models.ambassadors (
    ambassador_id uuid        NOT NULL,
    agency_id     uuid        NOT NULL,
    kind          text        NOT NULL,
    active        boolean     NOT NULL,
    name_sealed   text        NOT NULL,
    email_sealed  text,
    phone_sealed  text,
    -- The agency's own id for the person, such as a payroll number.
    external_id   text,
    sms_consent   boolean     NOT NULL,
    version       bigint      NOT NULL,
    enrolled_at   timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT ambassadors_pkey PRIMARY KEY (ambassador_id),
    CONSTRAINT ambassadors_name_sealed CHECK (name_sealed LIKE 'v1.%'),
    CONSTRAINT ambassadors_email_sealed CHECK (email_sealed LIKE 'v1.%'),
    CONSTRAINT ambassadors_phone_sealed CHECK (phone_sealed LIKE 'v1.%')
);
CREATE INDEX ambassadors_agency ON read_models.ambassadors (agency_id, enrolled_at, ambassador_id);
