-- Reports over the analytics facts: the program funnel, the ambassador leaderboard and
-- payout totals, each per agency.
--
-- The views are created WITH (security_invoker = true), which needs PostgreSQL 15 or
-- later. Without it a view reads its tables with its owner's rights, and the owner is not
-- subject to the row-level security that limits a BI role to its own agency.
--
-- Amounts are in minor units and never summed across currencies. A program's currency is
-- fixed when it is created, so the funnel has one row per program, and its currency
-- column names the unit of the cost figures.

-- Referrals per program that reached each stage, the conversion from each stage to the
-- next, the median time to hire and the bonus cost per hire.
--
-- Stages are cumulative, so a referral that was hired counts as contacted and
-- interviewing even when the recruiter skipped those steps. Duplicates are counted apart
-- and left out of every stage, since they never own their candidate. A conversion rate is
-- the fraction of the previous stage, rounded to four decimals, and NULL when the previous
-- stage is empty. Days to hire run from submission to the recorded hire. The bonus cost
-- counts approved, exported and paid payouts to ambassadors and to candidates (rejected,
-- voided and reversed ones cost nothing) and is divided by the number of hires.
CREATE VIEW analytics.program_funnel WITH (security_invoker = true) AS
WITH stages AS (
    SELECT agency_id,
           program_id,
           currency,
           count(*) FILTER (WHERE duplicate) AS duplicates,
           count(*) FILTER (WHERE NOT duplicate) AS submitted,
           count(*) FILTER (
               WHERE NOT duplicate
                 AND (contacted_at IS NOT NULL OR interviewing_at IS NOT NULL
                      OR hired_at IS NOT NULL)
           ) AS contacted,
           count(*) FILTER (
               WHERE NOT duplicate AND (interviewing_at IS NOT NULL OR hired_at IS NOT NULL)
           ) AS interviewing,
           count(*) FILTER (WHERE NOT duplicate AND hired_at IS NOT NULL) AS hired,
           count(*) FILTER (
               WHERE NOT duplicate AND first_bonus_milestone_at IS NOT NULL
           ) AS milestone,
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM hired_at - submitted_at) / 86400
           ) FILTER (WHERE NOT duplicate AND hired_at IS NOT NULL) AS median_days_to_hire
      FROM analytics.referral_facts
     GROUP BY agency_id, program_id, currency
),
costs AS (
    SELECT agency_id, program_id, currency, sum(amount) AS bonus_cost
      FROM analytics.payout_facts
     WHERE status IN ('approved', 'exported', 'paid')
     GROUP BY agency_id, program_id, currency
)
SELECT stages.agency_id,
       stages.program_id,
       stages.currency,
       stages.submitted,
       stages.contacted,
       stages.interviewing,
       stages.hired,
       stages.milestone,
       stages.duplicates,
       round(stages.contacted::numeric / NULLIF(stages.submitted, 0), 4) AS submitted_to_contacted,
       round(stages.interviewing::numeric / NULLIF(stages.contacted, 0), 4) AS contacted_to_interviewing,
       round(stages.hired::numeric / NULLIF(stages.interviewing, 0), 4) AS interviewing_to_hired,
       round(stages.milestone::numeric / NULLIF(stages.hired, 0), 4) AS hired_to_milestone,
       round(stages.median_days_to_hire::numeric, 2) AS median_days_to_hire,
       coalesce(costs.bonus_cost, 0)::bigint AS bonus_cost,
       round(coalesce(costs.bonus_cost, 0) / NULLIF(stages.hired, 0), 2) AS bonus_cost_per_hire
  FROM stages
  LEFT JOIN costs USING (agency_id, program_id, currency);

-- Ambassadors ranked by hires, then by bonuses paid, within each agency and currency (the
-- currency of the programs they referred to). Ties share a rank. Only bonuses paid to the
-- ambassador count; a candidate's bonus in a two-sided program is not the ambassador's.
CREATE VIEW analytics.ambassador_leaderboard WITH (security_invoker = true) AS
WITH referrals AS (
    SELECT agency_id,
           ambassador_id,
           currency,
           count(*) AS referrals,
           count(*) FILTER (WHERE hired_at IS NOT NULL) AS hires
      FROM analytics.referral_facts
     GROUP BY agency_id, ambassador_id, currency
),
bonuses AS (
    SELECT agency_id,
           ambassador_id,
           currency,
           sum(amount) FILTER (WHERE status IN ('approved', 'exported', 'paid')) AS earned_amount,
           sum(amount) FILTER (WHERE status = 'paid') AS paid_amount
      FROM analytics.payout_facts
     WHERE recipient = 'ambassador'
     GROUP BY agency_id, ambassador_id, currency
)
SELECT referrals.agency_id,
       referrals.ambassador_id,
       ambassadors.kind,
       referrals.currency,
       referrals.referrals,
       referrals.hires,
       coalesce(bonuses.earned_amount, 0)::bigint AS earned_amount,
       coalesce(bonuses.paid_amount, 0)::bigint AS paid_amount,
       rank() OVER (
           PARTITION BY referrals.agency_id, referrals.currency
           ORDER BY referrals.hires DESC, coalesce(bonuses.paid_amount, 0) DESC
       ) AS rank
  FROM referrals
  LEFT JOIN bonuses USING (agency_id, ambassador_id, currency)
  LEFT JOIN analytics.ambassador_facts AS ambassadors
         ON ambassadors.ambassador_id = referrals.ambassador_id;

-- Number and sum of payouts per agency, program, currency and status.
CREATE VIEW analytics.payout_totals WITH (security_invoker = true) AS
SELECT agency_id,
       program_id,
       currency,
       status,
       count(*) AS payouts,
       sum(amount)::bigint AS amount
  FROM analytics.payout_facts
 GROUP BY agency_id, program_id, currency, status;
