-- The current state of every user account, as authentication reads it on each request:
-- agency, roles, status and whether a TOTP secret is enrolled. The user's events are the
-- record; the accounts code rewrites this row from the aggregate after every command,
-- and `version` (the aggregate's sequence) keeps a late write from replacing a newer one.
--
-- No personal data and no credential is stored here: e-mail address, name, password hash
-- and TOTP secret live sealed in the user's events.
CREATE TABLE user_accounts (
    user_id      uuid        NOT NULL,
    -- NULL for a platform operator, who belongs to no agency.
    agency_id    uuid,
    roles        text[]      NOT NULL,
    status       text        NOT NULL,
    mfa_enrolled boolean     NOT NULL,
    version      bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_accounts_pkey PRIMARY KEY (user_id),
    CONSTRAINT user_accounts_status_check CHECK (status IN ('invited', 'active', 'deactivated')),
    CONSTRAINT user_accounts_roles_check CHECK (cardinality(roles) > 0)
);
CREATE INDEX user_accounts_agency ON user_accounts (agency_id, user_id);
