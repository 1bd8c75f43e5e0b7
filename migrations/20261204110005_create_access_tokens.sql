-- Personal access tokens, which integrations send as bearer tokens instead of signing in.
-- As for sessions, only the SHA-256 hash of the token is stored. The issue is recorded
-- as an AccessTokenIssued event of the user, with this row's id.
CREATE TABLE access_tokens (
    id           uuid        NOT NULL,
    user_id      uuid        NOT NULL,
    token_hash   bytea       NOT NULL,
    label        text        NOT NULL,
    created_by   uuid,
    created_at   timestamptz NOT NULL,
    -- NULL: valid until revoked.
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CONSTRAINT access_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT access_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT access_tokens_user_fkey FOREIGN KEY (user_id)
        REFERENCES user_accounts (user_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_open_by_user ON access_tokens (user_id) WHERE revoked_at IS NULL;
