-- Hashes for events stored before the hash chain existed, then a NOT NULL on hash.
--
-- The append-only trigger rejects every UPDATE, so this migration disables it for its own
-- transaction (migrations run in one) and enables it again before committing. Events are
-- hashed per aggregate in sequence order, so each event links to the hash just computed
-- for its predecessor. A gap in an aggregate's sequences stops the migration: such a
-- chain cannot be linked, and the gap needs a person to look at it.
ALTER TABLE events DISABLE TRIGGER events_reject_update_delete;

DO $$
DECLARE
    event record;
    previous_type text;
    previous_id text;
    previous_sequence bigint;
    previous bytea;
    computed bytea;
BEGIN
    FOR event IN
        SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,
               payload::text AS payload, metadata::text AS metadata
          FROM events
         ORDER BY aggregate_type, aggregate_id, sequence
    LOOP
        IF event.sequence = 1 THEN
            previous := NULL;
        ELSIF event.aggregate_type IS DISTINCT FROM previous_type
              OR event.aggregate_id IS DISTINCT FROM previous_id
              OR event.sequence <> previous_sequence + 1 THEN
            RAISE EXCEPTION 'cannot hash event % of % %: event % is missing',
                event.sequence, event.aggregate_type, event.aggregate_id, event.sequence - 1;
        END IF;

        computed := event_chain_hash(previous, event.aggregate_type, event.aggregate_id,
            event.sequence, event.event_type, event.event_version, event.payload,
            event.metadata);
        UPDATE events
           SET previous_hash = previous, hash = computed
         WHERE aggregate_type = event.aggregate_type
           AND aggregate_id = event.aggregate_id
           AND sequence = event.sequence;

        previous_type := event.aggregate_type;
        previous_id := event.aggregate_id;
        previous_sequence := event.sequence;
        previous := computed;
    END LOOP;
END;
$$;

ALTER TABLE events ENABLE TRIGGER events_reject_update_delete;

ALTER TABLE events ALTER COLUMN hash SET NOT NULL;
