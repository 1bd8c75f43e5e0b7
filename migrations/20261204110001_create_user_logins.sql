-- The login index: which user an e-mail address signs in as.
--
-- email_key is the keyed hash (HMAC-SHA-256) of the normalized address under the key of
-- the platform (agency id 00000000-0000-0000-0000-000000000000), not of the user's
-- agency, because login must find the account before it knows the agency. It also makes
-- an address unique across the whole platform: one person, one account.
--
-- A row is written before the user's first event, as a reservation of the address, so
-- it may briefly point to a user that does not exist yet. The accounts code takes such
-- a row over when it is older than ten minutes and no account row followed it, or when
-- its user is deactivated. user_logins_pkey is mapped to "e-mail address taken".
CREATE TABLE user_logins (
    email_key  text        NOT NULL,
    user_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_logins_pkey PRIMARY KEY (email_key),
    CONSTRAINT user_logins_user_key UNIQUE (user_id)
);
