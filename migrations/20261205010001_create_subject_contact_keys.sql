-- Keyed hashes of the e-mail addresses and phone numbers of every data subject (the
-- candidate of a referral, an ambassador), so that a subject request finds all records
-- of one person. Rows are written when the hashes are computed, before the event that
-- creates the subject, so a failed command can leave a row for a subject that has no
-- events; an erasure of such a subject only destroys a key that may not exist.
-- An erasure deletes the subject's rows, which is what makes the person unfindable.
CREATE TABLE subject_contact_keys (
    agency_id    uuid NOT NULL,
    contact_key  text NOT NULL,
    subject_kind text NOT NULL,
    subject_id   uuid NOT NULL,
    CONSTRAINT subject_contact_keys_pkey
        PRIMARY KEY (agency_id, contact_key, subject_kind, subject_id),
    CONSTRAINT subject_contact_keys_kind_check
        CHECK (subject_kind IN ('candidate', 'ambassador'))
);
CREATE INDEX subject_contact_keys_subject ON subject_contact_keys (agency_id, subject_id);
