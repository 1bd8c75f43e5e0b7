-- When each user last signed in or sent an authenticated request, for access reviews.
-- Kept out of the events: it changes on every request and is no business fact.
CREATE TABLE user_activity (
    user_id        uuid        NOT NULL,
    last_active_at timestamptz NOT NULL,
    CONSTRAINT user_activity_pkey PRIMARY KEY (user_id),
    CONSTRAINT user_activity_user_fkey FOREIGN KEY (user_id)
        REFERENCES user_accounts (user_id) ON DELETE CASCADE
);
