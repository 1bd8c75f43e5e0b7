-- One-time invitation tokens. Only the SHA-256 hash of a token is stored; the token text
-- is shown once, to the inviter, and sent to the invited person.
--
-- Rows go away with their account (ON DELETE CASCADE), as when an agency is off-boarded.
CREATE TABLE invitations (
    token_hash bytea       NOT NULL,
    user_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    CONSTRAINT invitations_pkey PRIMARY KEY (token_hash),
    CONSTRAINT invitations_user_fkey FOREIGN KEY (user_id)
        REFERENCES user_accounts (user_id) ON DELETE CASCADE
);
CREATE INDEX invitations_user ON invitations (user_id);
