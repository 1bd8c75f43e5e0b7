-- Keys for personal data. Every key is stored wrapped (encrypted) by the master key, which
-- never enters the database; master_key_id is a fingerprint of the wrapping key so that key
-- rotation can find the rows still wrapped by an old one.

-- One data key per data subject (a candidate of one referral, or one ambassador).
-- Destroying the wrapped key (erasure) makes every ciphertext of that subject unreadable,
-- while the events that hold the ciphertext stay untouched.
CREATE TABLE data_keys (
    agency_id     uuid        NOT NULL,
    subject_id    uuid        NOT NULL,
    wrapped_key   bytea,
    master_key_id text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    destroyed_at  timestamptz,
    CONSTRAINT data_keys_pkey PRIMARY KEY (agency_id, subject_id),
    CONSTRAINT data_keys_wrapped_unless_destroyed
        CHECK ((destroyed_at IS NULL) = (wrapped_key IS NOT NULL AND master_key_id IS NOT NULL))
);

-- One key per agency for keyed hashes (blind indexes) of e-mail addresses and phone numbers,
-- so duplicate checks never compare plaintext and hashes of one agency mean nothing in another.
CREATE TABLE agency_keys (
    agency_id     uuid        NOT NULL,
    wrapped_key   bytea       NOT NULL,
    master_key_id text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agency_keys_pkey PRIMARY KEY (agency_id)
);
