-- Hash-chain columns for tamper evidence, and the function that computes a hash.
--
-- Events form one chain per aggregate (aggregate_type, aggregate_id): each event stores
-- the hash of the event with sequence - 1 as previous_hash (NULL for sequence 1) and its
-- own hash over that previous hash and its stored columns. Changing any byte of a stored
-- event, or of its hash, then breaks the chain at that event.
--
-- hash = sha256(P || F(aggregate_type) || F(aggregate_id) || F(sequence) || F(event_type)
--               || F(event_version) || F(payload) || F(metadata))
-- where
--   P     is previous_hash, or 32 zero bytes for sequence 1;
--   F(b)  is the length of b in bytes as a 4-byte big-endian integer, followed by b;
--   text columns are their UTF-8 bytes (convert_to(column, 'UTF8'));
--   payload and metadata are the stored JSON text (column::text), byte for byte: these
--         columns are `json`, which keeps the text as the application wrote it;
--   sequence is the bigint as 8 bytes, big-endian two's complement (int8send).
-- The Rust verifier (referrals_store::audit) recomputes exactly this encoding.
--
-- position, transaction_id and recorded_at are assigned by the database and not covered;
-- agency_id is derived from metadata, which is covered.
ALTER TABLE events
    ADD COLUMN previous_hash bytea,
    ADD COLUMN hash bytea;

-- F(b) of the encoding above.
CREATE FUNCTION event_chain_field(value bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN int4send(octet_length(value)) || value;

CREATE FUNCTION event_chain_hash(
    previous_hash bytea,
    aggregate_type text,
    aggregate_id text,
    sequence bigint,
    event_type text,
    event_version text,
    payload text,
    metadata text
) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN sha256(
    coalesce(previous_hash, decode(repeat('00', 32), 'hex'))
    || event_chain_field(convert_to(aggregate_type, 'UTF8'))
    || event_chain_field(convert_to(aggregate_id, 'UTF8'))
    || event_chain_field(int8send(sequence))
    || event_chain_field(convert_to(event_type, 'UTF8'))
    || event_chain_field(convert_to(event_version, 'UTF8'))
    || event_chain_field(convert_to(payload, 'UTF8'))
    || event_chain_field(convert_to(metadata, 'UTF8'))
);
