//! Stored events as auditors read them: the audit event shape, the feed query shared by
//! the HTTP feed, the NDJSON export and `referrals audit export`, and the opening of
//! sealed personal fields inside payloads and replayed states.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use referrals_domain::ids::AgencyId;
use referrals_domain::values::Sealed;
use referrals_store::crypto::{open_field, CryptoError, Field, SecretKey};
use referrals_store::keys::KeyError;
use referrals_store::personal::PersonalData;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use utoipa::ToSchema;
use uuid::Uuid;

/// Shown in place of a sealed field whose subject was erased.
pub const ERASED: &str = "[erased]";
/// Shown in place of a sealed credential, which audit reads never open.
pub const SECRET: &str = "[secret]";

/// One stored event with its metadata.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEvent {
    /// `referral`, `payout`, `ambassador`, `program`, `user` or `agency`.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The event's number within its aggregate, from 1; the version it produced.
    pub sequence: i64,
    /// The fixed event name, such as `ReferralSubmitted`.
    pub event_type: String,
    /// The version of the payload's shape, such as `1.0`.
    pub event_version: String,
    /// When the event was stored (UTC).
    pub recorded_at: DateTime<Utc>,
    /// The user id of the actor, or `system` for a job.
    pub actor_id: Option<String>,
    /// The role the actor acted in, or `system:<job>` for a job.
    pub actor_role: Option<String>,
    /// Shared by every event of one business operation.
    pub correlation_id: Option<String>,
    /// The request or event that caused this one.
    pub causation_id: Option<String>,
    /// The event's fields as stored; see each endpoint for how sealed fields appear.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The event's link in the hash chain: SHA-256 in lowercase hex.
    pub hash: String,
}

/// The columns [`AuditEvent::from_row`] reads, plus the global order. Payload and metadata
/// are read as their stored text: a cast to `jsonb` would reject the escape `\u0000`, which
/// `json` accepts, and fail the whole page or export.
pub(crate) const EVENT_COLUMNS: &str =
    "aggregate_type, aggregate_id, sequence, event_type, event_version, \
     recorded_at, metadata::text AS metadata, payload::text AS payload, \
     encode(hash, 'hex') AS hash, position, transaction_id::text AS transaction_id";

impl AuditEvent {
    /// Builds an event from a row selected with [`EVENT_COLUMNS`].
    pub(crate) fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let metadata = json_column(row, "metadata")?;
        let text = |name: &str| {
            metadata
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(Self {
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            recorded_at: row.try_get("recorded_at")?,
            actor_id: text("actor_id"),
            actor_role: text("actor_role"),
            correlation_id: text("correlation_id"),
            causation_id: text("causation_id"),
            payload: json_column(row, "payload")?,
            hash: row.try_get("hash")?,
        })
    }
}

/// Parses a JSON column read as text.
fn json_column(row: &PgRow, name: &str) -> Result<Value, sqlx::Error> {
    let text: String = row.try_get(name)?;
    serde_json::from_str(&text).map_err(|error| sqlx::Error::ColumnDecode {
        index: name.to_owned(),
        source: Box::new(error),
    })
}

/// Reads every event of one aggregate of `agency_id`, in sequence order; empty when it
/// does not exist or belongs to another agency.
///
/// # Errors
/// Returns the database error.
pub async fn aggregate_history(
    pool: &PgPool,
    agency_id: AgencyId,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<AuditEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND agency_id = $3
          ORDER BY sequence"
    );
    let rows = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(agency_id.0)
        .fetch_all(pool)
        .await?;
    rows.iter().map(AuditEvent::from_row).collect()
}

/// Which events a feed or export contains.
#[derive(Debug, Clone, Default)]
pub struct FeedFilter {
    /// Only this agency's events; every agency's when `None` (command line only).
    pub agency_id: Option<AgencyId>,
    /// Only events recorded at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only events recorded before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only events of this type, such as `ReferralHired`.
    pub event_type: Option<String>,
}

/// The filters shared by the feed and the export.
const FILTER_SQL: &str = "WHERE ($1::uuid IS NULL OR agency_id = $1)
       AND ($2::timestamptz IS NULL OR recorded_at >= $2)
       AND ($3::timestamptz IS NULL OR recorded_at < $3)
       AND ($4::text IS NULL OR event_type = $4)";

/// Where a feed page ends: the inserting transaction and the position of its last event.
pub type FeedPosition = (String, i64);

/// Reads up to `limit` events matching `filter` after `after`, in the global order
/// `(transaction_id, position)`, each with its place in that order.
///
/// Positions are assigned at insert but transactions commit in another order, so a page
/// only reaches up to the oldest transaction still running: an event committed later can
/// never land before a cursor that was already handed out.
///
/// # Errors
/// Returns the database error.
pub async fn feed_page(
    pool: &PgPool,
    filter: &FeedFilter,
    after: Option<FeedPosition>,
    limit: i64,
) -> Result<Vec<(FeedPosition, AuditEvent)>, sqlx::Error> {
    let (after_transaction, after_position) = after.unzip();
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events {FILTER_SQL}
           AND ($5::text IS NULL OR (transaction_id, position) > ($5::text::xid8, $6))
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
         -- Qualified, because a bare name would sort by the text output column of the
         -- same name, which puts transaction 1000 before 999.
         ORDER BY events.transaction_id, events.position
         LIMIT $7"
    );
    let rows = sqlx::query(&sql)
        .bind(filter.agency_id.map(|agency| agency.0))
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.event_type.as_deref())
        .bind(after_transaction)
        .bind(after_position.unwrap_or(0))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let place = (row.try_get("transaction_id")?, row.try_get("position")?);
            Ok((place, AuditEvent::from_row(row)?))
        })
        .collect()
}

/// A destination for the lines of an export.
pub(crate) trait LineSink {
    /// Writes one line, ending in a newline.
    async fn write_line(&mut self, line: Vec<u8>) -> anyhow::Result<()>;
}

/// Writes every event matching `filter` to `sink` as one JSON line each, in global order.
/// Rows are streamed from one query, so memory stays flat however many match. Returns the
/// number of events written.
///
/// # Errors
/// Returns the database error, or the error of the sink.
pub(crate) async fn export_events(
    pool: &PgPool,
    filter: &FeedFilter,
    sink: &mut impl LineSink,
) -> anyhow::Result<u64> {
    // One query reads one snapshot, so the export holds every event committed before it
    // started, and none after.
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events {FILTER_SQL} ORDER BY position");
    let mut rows = sqlx::query(&sql)
        .bind(filter.agency_id.map(|agency| agency.0))
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.event_type.as_deref())
        .fetch(pool);
    let mut written = 0;
    while let Some(row) = rows.try_next().await? {
        let mut line = serde_json::to_vec(&AuditEvent::from_row(&row)?)?;
        line.push(b'\n');
        sink.write_line(line).await?;
        written += 1;
    }
    Ok(written)
}

/// The data key of one subject, fetched once for all the sealed fields of a read.
enum SubjectKey {
    Open(SecretKey),
    Erased,
}

/// Opens the sealed personal fields inside `values` (event payloads or a replayed state)
/// of one aggregate, in place.
///
/// Only referrals, ambassadors and users hold sealed fields, and their data subject is
/// the aggregate itself: the candidate of a referral, the ambassador, the user. A string
/// starting with `v1.` under the key `name`, `email`, `phone` or `note` becomes its
/// plaintext, or `"[erased]"` when the subject's key was destroyed. Password hashes and
/// TOTP secrets become `"[secret]"` and are never decrypted. Other aggregates are left
/// as they are.
///
/// # Errors
/// Returns the key error when the key cannot be read, or a crypto error when a
/// ciphertext does not open under its subject's key.
pub async fn open_sealed_fields(
    personal: &PersonalData,
    agency_id: AgencyId,
    aggregate_type: &str,
    subject_id: Uuid,
    values: &mut [&mut Value],
) -> Result<(), KeyError> {
    if !matches!(aggregate_type, "referral" | "ambassador" | "user") {
        return Ok(());
    }
    let key = match personal.vault().data_key(agency_id, subject_id).await {
        Ok(key) => SubjectKey::Open(key),
        Err(KeyError::Erased) => SubjectKey::Erased,
        // Nothing was ever sealed for this subject, so there is nothing to open.
        Err(KeyError::Missing) => return Ok(()),
        Err(error) => return Err(error),
    };
    let opener = Opener {
        key,
        agency_id,
        subject_id,
    };
    for value in values.iter_mut() {
        opener.open(value, None)?;
    }
    Ok(())
}

struct Opener {
    key: SubjectKey,
    agency_id: AgencyId,
    subject_id: Uuid,
}

/// What to do with a sealed string, by the key it is stored under.
enum SealedKind {
    Personal(Field),
    Credential,
}

fn sealed_kind(key: &str) -> Option<SealedKind> {
    match key {
        "name" => Some(SealedKind::Personal(Field::Name)),
        "email" => Some(SealedKind::Personal(Field::Email)),
        "phone" => Some(SealedKind::Personal(Field::Phone)),
        "note" => Some(SealedKind::Personal(Field::Note)),
        "password_hash" | "secret" | "mfa_secret" => Some(SealedKind::Credential),
        _ => None,
    }
}

impl Opener {
    fn open(&self, value: &mut Value, key: Option<&str>) -> Result<(), CryptoError> {
        match value {
            Value::Object(fields) => {
                for (name, field) in fields.iter_mut() {
                    self.open(field, Some(name))?;
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.open(item, key)?;
                }
            }
            Value::String(text) if text.starts_with("v1.") => match key.and_then(sealed_kind) {
                Some(SealedKind::Credential) => *text = SECRET.to_owned(),
                Some(SealedKind::Personal(field)) => {
                    *text = match &self.key {
                        SubjectKey::Erased => ERASED.to_owned(),
                        SubjectKey::Open(secret) => open_field(
                            secret,
                            self.agency_id,
                            self.subject_id,
                            field,
                            &Sealed(text.clone()),
                        )?,
                    };
                }
                None => {}
            },
            _ => {}
        }
        Ok(())
    }
}
