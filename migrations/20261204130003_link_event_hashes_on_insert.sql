-- Computes previous_hash and hash for every inserted event, overwriting any value the
-- inserting statement supplied, so no writer can choose its own hash.
--
-- PostgreSQL fires the BEFORE triggers of one event in the order of their names. The
-- `zz` in this trigger's name keeps it after any other BEFORE INSERT trigger, so it hashes
-- the row exactly as it will be stored; a trigger added later must sort before it.
-- The append-only trigger (events_reject_update_delete) has no column list, so it also
-- rejects an UPDATE of the hash columns.
CREATE FUNCTION link_event_hash() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    predecessor bytea;
BEGIN
    IF NEW.sequence = 1 THEN
        NEW.previous_hash := NULL;
    ELSE
        -- The predecessor is always committed or inserted earlier in this transaction:
        -- cqrs-es appends after loading the aggregate, and a concurrent append of the same
        -- sequence fails on events_pkey after this trigger.
        SELECT hash INTO predecessor
          FROM events
         WHERE aggregate_type = NEW.aggregate_type
           AND aggregate_id = NEW.aggregate_id
           AND sequence = NEW.sequence - 1;
        IF predecessor IS NULL THEN
            RAISE EXCEPTION 'cannot append event % of % %: event % is missing, so the hash chain cannot link it',
                NEW.sequence, NEW.aggregate_type, NEW.aggregate_id, NEW.sequence - 1
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        NEW.previous_hash := predecessor;
    END IF;

    NEW.hash := event_chain_hash(NEW.previous_hash, NEW.aggregate_type, NEW.aggregate_id,
        NEW.sequence, NEW.event_type, NEW.event_version, NEW.payload::text,
        NEW.metadata::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_zz_link_hash
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION link_event_hash();
