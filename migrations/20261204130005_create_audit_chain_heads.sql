-- The last event of each aggregate chain that a verification of its agency found intact,
-- with its hash. A later verification first checks that every recorded head still exists
-- with the same hash, which finds what a chain alone cannot: verified events removed from
-- the end of a chain, or a chain rewritten from some event on with every later hash
-- recomputed.
CREATE TABLE audit_chain_heads (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    agency_id      uuid   NOT NULL,
    sequence       bigint NOT NULL,
    hash           bytea  NOT NULL,
    CONSTRAINT audit_chain_heads_pkey PRIMARY KEY (aggregate_type, aggregate_id)
);
CREATE INDEX audit_chain_heads_agency ON audit_chain_heads (agency_id);
