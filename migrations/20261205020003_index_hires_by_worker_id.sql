-- Finds the referral hired under a back-office worker id, for timesheet imports. The
-- importer reads the event store through this index rather than a projection, so a hire
-- recorded a moment before an import is found without waiting for a read model.
CREATE INDEX events_hire_worker_id ON events
    (agency_id, (payload -> 'ReferralHired' ->> 'external_worker_id'), position)
    WHERE aggregate_type = 'referral' AND event_type = 'ReferralHired';
