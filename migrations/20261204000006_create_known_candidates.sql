-- Candidates the agency already knew, for the prior-contact rule: a referral of a
-- candidate contacted within the program's look-back period earns nothing. Rows hold only
-- the keyed hash of an e-mail address or phone number and the last contact date.
CREATE TABLE known_candidates (
    agency_id       uuid NOT NULL,
    contact_key     text NOT NULL,
    last_contact_on date NOT NULL,
    CONSTRAINT known_candidates_pkey PRIMARY KEY (agency_id, contact_key)
);
