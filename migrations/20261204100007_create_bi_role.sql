-- Read access for BI tools such as Metabase: the group role referrals_bi may read the
-- analytics schema and nothing else, and row-level security shows each BI login only the
-- agencies it is mapped to in analytics.bi_agency_access.
--
-- An operator grants an agency's BI login like this (the password is the operator's):
--
--   CREATE ROLE acme_bi LOGIN PASSWORD '...' IN ROLE referrals_bi;
--   INSERT INTO analytics.bi_agency_access (role_name, agency_id)
--       VALUES ('acme_bi', '0190f6d2-...-agency-id');
--
-- and revokes it with DELETE FROM analytics.bi_agency_access and DROP ROLE.
--
-- Row-level security does not restrict the tables' owner (the role that ran this
-- migration), a superuser or a BYPASSRLS role. The projections must connect as one of
-- them, because the policies below apply only to referrals_bi and its members. Any
-- other role finds no policy and can neither read nor write a row of these tables.

-- Roles belong to the whole cluster, not to one database, and several databases (tests,
-- or staging next to production) may run this migration at the same time. A CREATE ROLE
-- that races another one waits for it and fails with unique_violation when the other
-- commits, or with duplicate_object when the role already existed. Both mean the role
-- exists.
DO $$
BEGIN
    CREATE ROLE referrals_bi NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;
END;
$$;

-- Which BI login may read which agency. role_name is compared with current_user, the
-- login's own name (members inherit referrals_bi's rights but keep their name).
CREATE TABLE analytics.bi_agency_access (
    role_name name NOT NULL,
    agency_id uuid NOT NULL,
    CONSTRAINT bi_agency_access_pkey PRIMARY KEY (role_name, agency_id)
);

GRANT USAGE ON SCHEMA analytics TO referrals_bi;
GRANT SELECT ON
    analytics.ambassador_facts,
    analytics.referral_facts,
    analytics.payout_facts,
    analytics.program_funnel,
    analytics.ambassador_leaderboard,
    analytics.payout_totals,
    analytics.bi_agency_access
TO referrals_bi;

-- A BI login sees only its own mappings, so it cannot learn which other logins or
-- agencies exist. The fact table policies read the mapping through this policy too.
ALTER TABLE analytics.bi_agency_access ENABLE ROW LEVEL SECURITY;
CREATE POLICY bi_agency_access_own_rows ON analytics.bi_agency_access
    FOR SELECT TO referrals_bi
    USING (role_name = current_user);

ALTER TABLE analytics.ambassador_facts ENABLE ROW LEVEL SECURITY;
CREATE POLICY ambassador_facts_mapped_agencies ON analytics.ambassador_facts
    FOR SELECT TO referrals_bi
    USING (agency_id IN (SELECT agency_id FROM analytics.bi_agency_access
                          WHERE role_name = current_user));

ALTER TABLE analytics.referral_facts ENABLE ROW LEVEL SECURITY;
CREATE POLICY referral_facts_mapped_agencies ON analytics.referral_facts
    FOR SELECT TO referrals_bi
    USING (agency_id IN (SELECT agency_id FROM analytics.bi_agency_access
                          WHERE role_name = current_user));

ALTER TABLE analytics.payout_facts ENABLE ROW LEVEL SECURITY;
CREATE POLICY payout_facts_mapped_agencies ON analytics.payout_facts
    FOR SELECT TO referrals_bi
    USING (agency_id IN (SELECT agency_id FROM analytics.bi_agency_access
                          WHERE role_name = current_user));
