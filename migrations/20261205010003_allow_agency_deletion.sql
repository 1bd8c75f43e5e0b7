-- Off-boarding deletes every row of one agency, events and access log included. Both
-- tables stay append-only for everything else: a DELETE passes only for rows of the
-- agency named in the transaction-local setting `referrals.deleting_agency`, which the
-- off-boarding code sets with set_config(..., true) inside its own transaction.
-- UPDATE and TRUNCATE are still rejected.
CREATE OR REPLACE FUNCTION reject_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.agency_id::text = current_setting('referrals.deleting_agency', true) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'events are append-only: % is not allowed on table events', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Record a new event that corrects or reverses the earlier one.';
END;
$$;

CREATE OR REPLACE FUNCTION reject_access_log_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.agency_id::text = current_setting('referrals.deleting_agency', true) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'access_log is append-only: % is not allowed on table access_log', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
