-- One row per demo data set loaded into an agency. `referrals demo` reads it to tell an
-- empty database from a loaded one, and from one whose load stopped half-way
-- (finished_at still NULL), which it cannot resume.
CREATE TABLE demo_fixture_loads (
    agency_id   uuid PRIMARY KEY,
    seed        bigint NOT NULL,
    scale       double precision NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
