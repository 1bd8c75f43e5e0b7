-- The last TOTP time step (Unix time / 30 s) each user signed in with. A code is accepted
-- only for a later step, so a code seen by someone else cannot be used a second time
-- (RFC 6238, section 5.2).
CREATE TABLE totp_last_steps (
    user_id uuid        NOT NULL,
    step    bigint      NOT NULL,
    used_at timestamptz NOT NULL,
    CONSTRAINT totp_last_steps_pkey PRIMARY KEY (user_id),
    CONSTRAINT totp_last_steps_user_fkey FOREIGN KEY (user_id)
        REFERENCES user_accounts (user_id) ON DELETE CASCADE
);
