//! What must hold after a load, whatever happened to the servers during it. Each check is
//! one function that panics with the first violation it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::load::LoadReport;
use super::Database;

/// Every command that got a 2xx response has its event in the event store: the event at
/// the aggregate version the response reported.
pub async fn accepted_commands_are_stored(connection: &mut PgConnection, report: &LoadReport) {
    let types: Vec<&str> = report.accepted.iter().map(|a| a.aggregate_type).collect();
    let ids: Vec<&str> = report
        .accepted
        .iter()
        .map(|a| a.aggregate_id.as_str())
        .collect();
    let versions: Vec<i64> = report.accepted.iter().map(|a| a.version).collect();
    let missing: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT accepted.aggregate_type, accepted.aggregate_id, accepted.version
           FROM unnest($1::text[], $2::text[], $3::bigint[])
                AS accepted (aggregate_type, aggregate_id, version)
          WHERE NOT EXISTS (
                SELECT 1 FROM events
                 WHERE events.aggregate_type = accepted.aggregate_type
                   AND events.aggregate_id = accepted.aggregate_id
                   AND events.sequence = accepted.version)",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&versions)
    .fetch_all(connection)
    .await
    .unwrap();
    assert!(
        missing.is_empty(),
        "{} of {} accepted commands have no event, first: {:?}",
        missing.len(),
        report.accepted.len(),
        missing.first()
    );
}

/// At most one payout per referral, milestone and recipient was requested, and no payout
/// was approved twice.
pub async fn payouts_are_not_duplicated(connection: &mut PgConnection) {
    let requested_twice: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT payload::jsonb #>> '{PayoutRequested,referral_id}',
                payload::jsonb #>> '{PayoutRequested,milestone}',
                payload::jsonb #>> '{PayoutRequested,recipient}',
                count(*)
           FROM events
          WHERE aggregate_type = 'payout' AND event_type = 'PayoutRequested'
          GROUP BY 1, 2, 3
         HAVING count(*) > 1",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    assert!(
        requested_twice.is_empty(),
        "payouts requested more than once: {requested_twice:?}"
    );

    let approved_twice: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FROM events
          WHERE aggregate_type = 'payout' AND event_type = 'PayoutApproved'
          GROUP BY 1 HAVING count(*) > 1",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    assert!(
        approved_twice.is_empty(),
        "payouts approved more than once: {approved_twice:?}"
    );

    let unreadable: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE event_type = 'PayoutRequested'
            AND payload::jsonb #>> '{PayoutRequested,referral_id}' IS NULL",
    )
    .fetch_one(connection)
    .await
    .unwrap();
    assert_eq!(
        unreadable, 0,
        "PayoutRequested events whose referral this check cannot read"
    );
}

/// Asserts that each candidate has one owner. The client saw at most one accepted
/// `submitted` per e-mail address. In the event store every owning submission has a row in
/// `candidate_claims`, whose key is the candidate, so no two owners share a candidate.
/// That half also covers submissions whose response a crash cut off.
pub async fn one_owner_per_candidate(connection: &mut PgConnection, report: &LoadReport) {
    for (email, submissions) in &report.submissions {
        let owners: Vec<&String> = submissions
            .iter()
            .filter(|(_, status)| status == "submitted")
            .map(|(id, _)| id)
            .collect();
        assert!(owners.len() <= 1, "{email} has owners {owners:?}");
    }

    let owning: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE aggregate_type = 'referral' AND event_type = 'ReferralSubmitted'
            AND payload::jsonb #>> '{ReferralSubmitted,status}' = 'submitted'",
    )
    .fetch_one(&mut *connection)
    .await
    .unwrap();
    let owning_without_claim: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE aggregate_type = 'referral' AND event_type = 'ReferralSubmitted'
            AND payload::jsonb #>> '{ReferralSubmitted,status}' = 'submitted'
            AND NOT EXISTS (SELECT 1 FROM candidate_claims
                             WHERE candidate_claims.referral_id::text = events.aggregate_id)",
    )
    .fetch_one(&mut *connection)
    .await
    .unwrap();
    // Candidates whose submission got no response (cut off by a crash) are unknown to
    // the report, so the bound counts every request without a response as a candidate.
    let attempted = report.submissions.len() as i64 + report.transport_errors as i64;
    assert!(
        owning <= attempted,
        "{owning} owning submissions for at most {attempted} candidates"
    );
    // A claim without an owning submission is allowed: the claim commits before the
    // event, so a command that fails in between (the database went down) leaves it.
    assert_eq!(
        owning_without_claim, 0,
        "owning submissions without a candidate claim"
    );
}

/// Asserts that every read model equals a rebuild from the event store. Stop the servers
/// first, because the check runs `referrals projections rebuild` and compares whole rows.
pub async fn read_models_equal_rebuild(database: &Database) {
    let mut connection = database.connect().await;
    let before = read_model_rows(&mut connection).await;
    let rebuild = database
        .command()
        .args(["projections", "rebuild"])
        .output()
        .unwrap();
    assert!(
        rebuild.status.success(),
        "projections rebuild failed: {}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    let after = read_model_rows(&mut connection).await;
    for (table, rows) in &before {
        assert!(
            after.get(table) == Some(rows),
            "{table} differs after a rebuild: {} rows before, {} after",
            rows.len(),
            after.get(table).map_or(0, Vec::len)
        );
    }
    assert_eq!(
        before.len(),
        after.len(),
        "the same tables before and after"
    );
}

/// Rows of every read model table, as sorted JSON text, by `schema.table`.
async fn read_model_rows(connection: &mut PgConnection) -> BTreeMap<String, Vec<String>> {
    let mut rows = BTreeMap::new();
    for projection in referrals_projections::models::all() {
        for table in projection.tables() {
            let name = format!("{}.{}", projection.schema(), table);
            let query = format!("SELECT row_to_json(t)::text FROM {name} AS t ORDER BY 1");
            let table_rows: Vec<String> = sqlx::query_scalar(&query)
                .fetch_all(&mut *connection)
                .await
                .unwrap();
            rows.insert(name, table_rows);
        }
    }
    rows
}

/// Events per event type, for comparing two runs of the same load.
pub async fn event_counts(connection: &mut PgConnection) -> BTreeMap<String, i64> {
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 1")
            .fetch_all(connection)
            .await
            .unwrap();
    counts.into_iter().collect()
}

/// Returns the dedupe keys of outbox rows that a dispatcher has claimed and not yet
/// finished: pending, with `next_attempt_at` pushed past now by the claim lease. Read
/// right after a kill, these are the rows the killed process may have sent without
/// recording it. A row waiting out the backoff after a failed attempt matches too, so
/// the set can only be larger than the claims, which makes the check more lenient.
pub async fn claimed_notifications(connection: &mut PgConnection) -> BTreeSet<String> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT dedupe_key FROM notifications.outbox
          WHERE status = 'pending' AND next_attempt_at > now()",
    )
    .fetch_all(connection)
    .await
    .unwrap();
    keys.into_iter().collect()
}

/// Waits until no outbox row is pending, polling for at most `timeout`. Returns the
/// number still pending when the time runs out.
pub async fn wait_for_outbox_drained(
    connection: &mut PgConnection,
    timeout: Duration,
) -> Result<(), i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications.outbox WHERE status = 'pending'",
        )
        .fetch_one(&mut *connection)
        .await
        .unwrap();
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(pending);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asserts that every outbox row is finished and that the mock e-mail provider got each
/// sent e-mail once, given the dedupe keys it `received` and the rows `claimed_at_kill`.
///
/// Delivery is at least once: a process killed between the provider's 202 and the
/// `sent` update leaves the row pending, and after the claim lease another process sends
/// it again. So a key may arrive twice only if its row was claimed and unfinished at
/// the kill. Every other key must arrive exactly once.
pub async fn notifications_delivered_once(
    connection: &mut PgConnection,
    received: &[String],
    claimed_at_kill: &BTreeSet<String>,
) {
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT dedupe_key, channel, status, last_error FROM notifications.outbox ORDER BY id",
    )
    .fetch_all(connection)
    .await
    .unwrap();
    assert!(!rows.is_empty(), "the load queued no notification");

    let mut deliveries: BTreeMap<&str, usize> = BTreeMap::new();
    for key in received {
        *deliveries.entry(key.as_str()).or_default() += 1;
    }

    let unfinished: Vec<_> = rows
        .iter()
        .filter(|(_, _, status, reason)| {
            !(status == "sent" || (status == "skipped" && reason.is_some()))
        })
        .collect();
    assert!(
        unfinished.is_empty(),
        "{} outbox rows neither sent nor skipped with a reason, first: {:?}",
        unfinished.len(),
        unfinished.first()
    );

    let sent_emails: Vec<&str> = rows
        .iter()
        .filter(|(_, channel, status, _)| channel == "email" && status == "sent")
        .map(|(key, _, _, _)| key.as_str())
        .collect();
    assert!(!sent_emails.is_empty(), "no e-mail was sent");
    let never_delivered: Vec<&&str> = sent_emails
        .iter()
        .filter(|key| !deliveries.contains_key(**key))
        .collect();
    assert!(
        never_delivered.is_empty(),
        "{} e-mails marked sent never reached the provider, first: {:?}",
        never_delivered.len(),
        never_delivered.first()
    );

    let known: BTreeSet<&str> = sent_emails.iter().copied().collect();
    let unexpected: Vec<&&str> = deliveries
        .keys()
        .filter(|key| !known.contains(**key))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the provider got keys of no sent e-mail row (SMS, skipped or unknown): {unexpected:?}"
    );

    let repeated_unclaimed: Vec<(&&str, &usize)> = deliveries
        .iter()
        .filter(|(key, count)| **count > 1 && !claimed_at_kill.contains(**key))
        .collect();
    assert!(
        repeated_unclaimed.is_empty(),
        "e-mails delivered more than once without a claim cut off by the kill: {repeated_unclaimed:?}"
    );
    let more_than_twice: Vec<(&&str, &usize)> =
        deliveries.iter().filter(|(_, count)| **count > 2).collect();
    assert!(
        more_than_twice.is_empty(),
        "e-mails delivered more than twice (once by the killed process, once after): {more_than_twice:?}"
    );
}

/// Asserts that the outbox has exactly the rows the notifying events call for, keyed
/// `aggregate_type/aggregate_id/sequence:channel`. Wait for the outbox projection to
/// catch up first.
///
/// The query restates the rules of `workers/src/outbox.rs` in SQL. An ambassador gets an
/// e-mail and an SMS row for a submission, each status change, and each bonus or payment
/// of theirs. A recruiter gets an e-mail row when a referral is assigned to them.
pub async fn outbox_matches_notifying_events(connection: &mut PgConnection) {
    let expected: BTreeSet<String> = sqlx::query_scalar(
        "SELECT format('%s/%s/%s:%s', e.aggregate_type, e.aggregate_id, e.sequence, channel)
           FROM events AS e
          CROSS JOIN LATERAL unnest(CASE WHEN e.event_type = 'RecruiterAssigned'
                                         THEN ARRAY['email']
                                         ELSE ARRAY['email', 'sms'] END) AS channel
          WHERE (e.aggregate_type = 'referral'
                 AND e.event_type IN ('ReferralSubmitted', 'RecruiterAssigned',
                                      'ReferralContacted', 'ReferralInterviewing',
                                      'ReferralHired', 'ReferralDeclined', 'ReferralWithdrawn',
                                      'ReferralExpired', 'ReferralCompleted'))
             OR (e.aggregate_type = 'payout'
                 AND e.event_type IN ('PayoutRequested', 'PayoutPaid')
                 AND EXISTS (SELECT 1 FROM events AS first
                              WHERE first.aggregate_type = 'payout'
                                AND first.aggregate_id = e.aggregate_id
                                AND first.sequence = 1
                                AND first.payload -> 'PayoutRequested' ->> 'recipient'
                                    = 'ambassador'))",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let queued: BTreeSet<String> =
        sqlx::query_scalar("SELECT dedupe_key FROM notifications.outbox")
            .fetch_all(connection)
            .await
            .unwrap()
            .into_iter()
            .collect();

    assert!(!expected.is_empty(), "no event of the load notifies anyone");
    let missing: Vec<&String> = expected.difference(&queued).collect();
    assert!(
        missing.is_empty(),
        "{} notifying events have no outbox row, first: {:?}",
        missing.len(),
        missing.first()
    );
    let unexpected: Vec<&String> = queued.difference(&expected).collect();
    assert!(
        unexpected.is_empty(),
        "{} outbox rows match no notifying event, first: {:?}",
        unexpected.len(),
        unexpected.first()
    );
}
