-- Sign-in sessions. Only the SHA-256 hash of the bearer token is stored, so a copy of
-- this table cannot be replayed as tokens. Every request looks the session up by
-- token_hash; deactivating a user sets revoked_at on all of that user's sessions.
CREATE TABLE sessions (
    id             uuid        NOT NULL,
    user_id        uuid        NOT NULL,
    token_hash     bytea       NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    -- Updated at most once a minute, so that busy clients do not write on every request.
    last_seen_at   timestamptz NOT NULL,
    client_address inet,
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_token_hash_key UNIQUE (token_hash),
    CONSTRAINT sessions_user_fkey FOREIGN KEY (user_id)
        REFERENCES user_accounts (user_id) ON DELETE CASCADE
);
CREATE INDEX sessions_open_by_user ON sessions (user_id) WHERE revoked_at IS NULL;
