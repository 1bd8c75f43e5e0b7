-- Indexes the candidates that referrals claimed before subject_contact_keys existed, so
-- subject requests find them. Only owning referrals have claims: duplicates and
-- ambassadors recorded before this migration are not indexed, because their keyed
-- hashes are stored nowhere and can only be recomputed by decrypting their events.
INSERT INTO subject_contact_keys (agency_id, contact_key, subject_kind, subject_id)
SELECT agency_id, contact_key, 'candidate', referral_id
  FROM candidate_claims
    ON CONFLICT DO NOTHING;
