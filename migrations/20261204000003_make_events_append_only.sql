-- Events are facts: the application may insert them, never change or remove them.
-- The triggers fire for every role, the table owner included. The only path that may
-- remove events (deleting an off-boarded agency) disables them explicitly, as the owner,
-- inside its own transaction.
CREATE FUNCTION reject_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % is not allowed on table events', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Record a new event that corrects or reverses the earlier one.';
END;
$$;

CREATE TRIGGER events_reject_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION reject_event_change();

CREATE TRIGGER events_reject_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION reject_event_change();
