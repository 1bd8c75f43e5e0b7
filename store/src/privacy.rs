//! Subject requests and agency deletion: finding every record of one person through the
//! keyed hashes of their e-mail address and phone number, erasing them, exporting what is
//! held about them, and deleting every row and key of an off-boarded agency.
//!
//! Erasure is crypto-shredding. The subject's data key is destroyed, so every ciphertext
//! sealed under it (in events, snapshots, `read_models.aggregate_states`,
//! `read_models.aggregate_snapshots` and the sealed columns of read models) can no longer
//! be opened, and rebuilding a read model produces the same unreadable ciphertext. The
//! events stay untouched, so the hash chain still verifies, and counts and payout totals
//! do not change. What is not sealed under the subject's key is removed instead: the keyed
//! hashes in `candidate_claims`, `known_candidates` and `subject_contact_keys`, stored
//! idempotent responses that name the subject, and access exports about the person.
//!
//! A later referral of an erased candidate is treated as a new person, because no keyed
//! hash of the erased one remains. It is neither a duplicate of the erased referral nor a
//! prior contact, and it gets a new data key of its own. The erased referral keeps its
//! status and its payouts.

use chrono::{DateTime, Utc};
use referrals_domain::ids::{AgencyId, AmbassadorId, ReferralId};
use referrals_domain::privacy::{PrivacyCommand, SubjectKind, SubjectRef};
use referrals_domain::values::{ContactKeys, Sealed};
use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::application::{AppError, Application};
use crate::crypto::{open_field, seal_field, Field};
use crate::event_store::CommandMetadata;
use crate::keys::KeyError;
use crate::personal::{OpenedDetails, SealedDetails};

/// The placeholder that replaces a personal field whose subject was erased.
pub const ERASED: &str = "[erased]";

/// The kind of a subject request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Export everything held about the person.
    Access,
    /// Erase every record of the person.
    Erasure,
}

impl RequestKind {
    /// Returns the kind's name in storage and in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Erasure => "erasure",
        }
    }
}

/// A completed subject request as stored in `subject_requests`.
#[derive(Debug, Clone)]
pub struct SubjectRequest {
    /// The request's id.
    pub request_id: Uuid,
    /// `access` or `erasure`.
    pub kind: String,
    /// `completed`, or `erased` for an access request whose export a later erasure
    /// destroyed.
    pub status: String,
    /// The number of subjects the request found.
    pub subjects: i32,
    /// When the request was made.
    pub requested_at: DateTime<Utc>,
    /// When it completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// The export of an access request, opened; `None` for an erasure or an erased export.
    pub export: Option<Value>,
    /// The subjects in the export, for the access log.
    pub export_subjects: Vec<SubjectRef>,
}

/// Records the keyed hashes of a subject in `subject_contact_keys`, so that subject
/// requests find it. Existing rows are kept: an ambassador's old e-mail address still
/// names them in older events.
///
/// # Errors
/// [`AppError::Unavailable`] when the insert fails.
pub async fn index_subject(
    pool: &PgPool,
    agency_id: AgencyId,
    kind: SubjectKind,
    subject_id: Uuid,
    keys: &ContactKeys,
) -> Result<(), AppError> {
    let keys = key_texts(keys);
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO subject_contact_keys (agency_id, contact_key, subject_kind, subject_id)
         SELECT $1, contact_key, $3, $4 FROM unnest($2::text[]) AS contact_key
         ON CONFLICT DO NOTHING",
    )
    .bind(agency_id.0)
    .bind(&keys)
    .bind(kind.as_str())
    .bind(subject_id)
    .execute(pool)
    .await
    .map_err(unavailable)?;
    Ok(())
}

fn key_texts(keys: &ContactKeys) -> Vec<String> {
    [&keys.email, &keys.phone]
        .into_iter()
        .flatten()
        .map(|key| key.0.clone())
        .collect()
}

fn unavailable(error: sqlx::Error) -> AppError {
    AppError::Unavailable(error.to_string())
}

fn parse_kind(text: &str) -> Result<SubjectKind, AppError> {
    match text {
        "candidate" => Ok(SubjectKind::Candidate),
        "ambassador" => Ok(SubjectKind::Ambassador),
        other => Err(AppError::Internal(format!(
            "subject_contact_keys contains the unknown subject kind {other:?}"
        ))),
    }
}

/// Finds every subject of `agency_id` with one of `keys`, ordered by kind and id.
///
/// NOTE: ambassadors and duplicate referrals recorded before `subject_contact_keys`
/// existed are not in the index, so requests do not find them. No backfill decrypts
/// their events yet.
///
/// # Errors
/// [`AppError::Unavailable`] when the query fails.
pub async fn find_subjects(
    pool: &PgPool,
    agency_id: AgencyId,
    keys: &ContactKeys,
) -> Result<Vec<SubjectRef>, AppError> {
    find_subjects_by_hash(pool, agency_id, &key_texts(keys)).await
}

async fn find_subjects_by_hash(
    pool: &PgPool,
    agency_id: AgencyId,
    keys: &[String],
) -> Result<Vec<SubjectRef>, AppError> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT DISTINCT subject_kind, subject_id FROM subject_contact_keys
          WHERE agency_id = $1 AND contact_key = ANY($2)
          ORDER BY subject_kind, subject_id",
    )
    .bind(agency_id.0)
    .bind(keys)
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    rows.into_iter()
        .map(|(kind, id)| {
            Ok(SubjectRef {
                kind: parse_kind(&kind)?,
                id,
            })
        })
        .collect()
}

/// Erases every subject of the caller's agency that has one of `keys`, records a
/// `SubjectsErased` event and a `subject_requests` row, and returns the request id and the
/// erased subjects. An erasure that finds no subject still completes and is recorded, so the
/// requester learns that nothing is held.
///
/// # Errors
/// [`AppError::Unavailable`] when the database fails. Nothing is erased then, because
/// every change, the `SubjectsErased` event included, commits in one transaction.
pub async fn erase(
    app: &Application,
    metadata: &CommandMetadata,
    keys: &ContactKeys,
) -> Result<(Uuid, Vec<SubjectRef>), AppError> {
    let agency_id = metadata.agency_id;
    let pool = app.pool();
    let found = find_subjects(pool, agency_id, keys).await?;
    let found_ids: Vec<Uuid> = found.iter().map(|subject| subject.id).collect();
    let request_id = Uuid::now_v7();

    let mut transaction = pool.begin().await.map_err(unavailable)?;
    // Every keyed hash of these subjects counts, not only the requested ones. A person
    // erased by e-mail address loses the hash of their phone number too, and the records
    // that share that phone number are erased with them (one step, not the closure).
    let request_keys = key_texts(keys);
    let found_keys = subject_keys(&mut transaction, agency_id, &found_ids, &request_keys).await?;
    let subjects = find_subjects_by_hash(pool, agency_id, &found_keys).await?;
    let ids: Vec<Uuid> = subjects.iter().map(|subject| subject.id).collect();
    let all_keys = subject_keys(&mut transaction, agency_id, &ids, &request_keys).await?;

    destroy_data_keys(&mut transaction, agency_id, &ids).await?;
    remove_keyed_hashes(&mut transaction, agency_id, &ids, &all_keys).await?;
    destroy_access_exports(&mut transaction, agency_id, &all_keys).await?;
    delete_idempotent_responses(app, &mut transaction, agency_id, &ids).await?;
    redact_payroll_files(app, &mut transaction, agency_id, &ids).await?;

    record_request(
        &mut transaction,
        metadata,
        request_id,
        RequestKind::Erasure,
        &[],
        subjects.len(),
        None,
    )
    .await?;
    let command = PrivacyCommand::RecordErasure {
        agency_id,
        subjects: subjects.clone(),
        at: metadata.recorded_at,
    };
    app.privacy
        .execute_new_in(&mut transaction, &request_id.to_string(), command, metadata)
        .await?;
    transaction.commit().await.map_err(unavailable)?;
    tracing::info!(%agency_id, %request_id, subjects = subjects.len(), "subjects erased");
    Ok((request_id, subjects))
}

/// Returns the keyed hashes of the subjects `ids` together with `extra`.
async fn subject_keys(
    transaction: &mut Transaction<'_, Postgres>,
    agency_id: AgencyId,
    ids: &[Uuid],
    extra: &[String],
) -> Result<Vec<String>, AppError> {
    let mut keys: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT contact_key FROM subject_contact_keys
          WHERE agency_id = $1 AND subject_id = ANY($2)",
    )
    .bind(agency_id.0)
    .bind(ids)
    .fetch_all(&mut **transaction)
    .await
    .map_err(unavailable)?;
    for key in extra {
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    Ok(keys)
}

/// Destroys the data keys of `ids`. A subject without a key row gets a destroyed one, so
/// that nothing can be sealed for it later under a fresh key.
async fn destroy_data_keys(
    transaction: &mut Transaction<'_, Postgres>,
    agency_id: AgencyId,
    ids: &[Uuid],
) -> Result<(), AppError> {
    sqlx::query(
        "INSERT INTO data_keys (agency_id, subject_id, wrapped_key, master_key_id, destroyed_at)
         SELECT $1, subject_id, NULL, NULL, now() FROM unnest($2::uuid[]) AS subject_id
         ON CONFLICT (agency_id, subject_id) DO UPDATE
            SET wrapped_key = NULL, master_key_id = NULL,
                destroyed_at = coalesce(data_keys.destroyed_at, now())",
    )
    .bind(agency_id.0)
    .bind(ids)
    .execute(&mut **transaction)
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// Removes the keyed hashes of the erased subjects. Claims keep their rows, so the erased
/// referral still owns what it owned, but their hash becomes a random tombstone that no
/// new candidate can match.
async fn remove_keyed_hashes(
    transaction: &mut Transaction<'_, Postgres>,
    agency_id: AgencyId,
    ids: &[Uuid],
    keys: &[String],
) -> Result<(), AppError> {
    let statements = [
        "UPDATE candidate_claims
            SET contact_key = 'erased:' || gen_random_uuid()
          WHERE agency_id = $1 AND (referral_id = ANY($2) OR contact_key = ANY($3))",
        "DELETE FROM known_candidates WHERE agency_id = $1 AND contact_key = ANY($3)",
        "DELETE FROM subject_contact_keys
          WHERE agency_id = $1 AND (subject_id = ANY($2) OR contact_key = ANY($3))",
    ];
    for statement in statements {
        sqlx::query(statement)
            .bind(agency_id.0)
            .bind(ids)
            .bind(keys)
            .execute(&mut **transaction)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Destroys the stored exports of earlier access requests about the same person: their
/// data keys go, and the sealed export is removed.
async fn destroy_access_exports(
    transaction: &mut Transaction<'_, Postgres>,
    agency_id: AgencyId,
    keys: &[String],
) -> Result<(), AppError> {
    let requests: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE subject_requests SET sealed_export = NULL, status = 'erased'
          WHERE agency_id = $1 AND kind = 'access' AND contact_keys && $2
          RETURNING request_id",
    )
    .bind(agency_id.0)
    .bind(keys)
    .fetch_all(&mut **transaction)
    .await
    .map_err(unavailable)?;
    // Their keyed hashes name the person too.
    sqlx::query("UPDATE subject_requests SET contact_keys = '{}' WHERE request_id = ANY($1)")
        .bind(&requests)
        .execute(&mut **transaction)
        .await
        .map_err(unavailable)?;
    destroy_data_keys(transaction, agency_id, &requests).await
}

/// Deletes the stored idempotent responses of the agency that mention one of the erased
/// subjects. The responses are sealed under a key shared by the whole agency, so they
/// are opened one by one and searched for the subjects' ids. This relies on every
/// response that shows a subject's personal data also containing the subject's id.
async fn delete_idempotent_responses(
    app: &Application,
    transaction: &mut Transaction<'_, Postgres>,
    agency_id: AgencyId,
    ids: &[Uuid],
) -> Result<(), AppError> {
    if ids.is_empty() {
        return Ok(());
    }
    // The subject under which the idempotency layer seals the responses of one agency.
    let sealing_subject = Uuid::new_v5(&agency_id.0, b"idempotency-records");
    let key = match app
        .personal()
        .vault()
        .data_key(agency_id, sealing_subject)
        .await
    {
        Ok(key) => key,
        Err(KeyError::Missing) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT user_id, key, sealed_body FROM idempotency_records
          WHERE agency_id = $1 AND sealed_body IS NOT NULL
            FOR UPDATE",
    )
    .bind(agency_id.0)
    .fetch_all(&mut **transaction)
    .await
    .map_err(unavailable)?;
    let needles: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    for (user_id, record_key, sealed_body) in rows {
        let body = open_field(
            &key,
            agency_id,
            sealing_subject,
            Field::Note,
            &Sealed(sealed_body),
        )
        .map_err(|error| AppError::Internal(error.to_string()))?;
        if !needles.iter().any(|id| body.contains(id.as_str())) {
            continue;
        }
        sqlx::query(
            "DELETE FROM idempotency_records WHERE agency_id = $1 AND user_id = $2 AND key = $3",
        )
        .bind(agency_id.0)
        .bind(user_id)
        .bind(record_key)
        .execute(&mut **transaction)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

/// Replaces the erased subjects' names in stored payroll export files with `[erased]`.
/// A file is sealed under a data key of its own, not under the keys of the people it
/// names, so destroying their keys alone would leave their names readable in it.
/// The file's `ambassador_ids` follow its lines in order, and a candidate payee's line
/// names the referral in its memo.
async fn redact_payroll_files(
    app: &Application,
    transaction: &mut Transaction<'_, Postgres>,
    agency_id: AgencyId,
    ids: &[Uuid],
) -> Result<(), AppError> {
    if ids.is_empty() {
        return Ok(());
    }
    let files: Vec<(Uuid, String, Vec<Uuid>)> = sqlx::query_as(
        "SELECT export_id, content, ambassador_ids FROM payout_exports
          WHERE agency_id = $1 AND (ambassador_ids && $2 OR referral_ids && $2)
            FOR UPDATE",
    )
    .bind(agency_id.0)
    .bind(ids)
    .fetch_all(&mut **transaction)
    .await
    .map_err(unavailable)?;
    for (export_id, content, ambassador_ids) in files {
        let key = app
            .personal()
            .vault()
            .data_key(agency_id, export_id)
            .await?;
        let text = open_field(&key, agency_id, export_id, Field::Note, &Sealed(content))
            .map_err(|error| AppError::Internal(error.to_string()))?;
        let redacted = redact_payroll_csv(&text, &ambassador_ids, ids)
            .map_err(|error| AppError::Internal(format!("payroll file {export_id}: {error}")))?;
        let sealed = seal_field(&key, agency_id, export_id, Field::Note, &redacted);
        sqlx::query("UPDATE payout_exports SET content = $2 WHERE export_id = $1")
            .bind(export_id)
            .bind(sealed.0)
            .execute(&mut **transaction)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Column positions in a payroll export file.
const PAYEE_TYPE: usize = 1;
const PAYEE_NAME: usize = 2;
const AMBASSADOR_NAME: usize = 4;
const MEMO: usize = 7;

/// Rewrites a payroll CSV file with `[erased]` in place of the names of `erased`.
/// `ambassador_ids[i]` is the ambassador of data line `i`.
fn redact_payroll_csv(
    text: &str,
    ambassador_ids: &[Uuid],
    erased: &[Uuid],
) -> Result<String, csv::Error> {
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(reader.headers()?)?;
    for (line, record) in reader.records().enumerate() {
        let mut fields: Vec<String> = record?.iter().map(str::to_owned).collect();
        let ambassador_erased = ambassador_ids
            .get(line)
            .is_some_and(|id| erased.contains(id));
        let candidate_erased = fields
            .get(PAYEE_TYPE)
            .is_some_and(|kind| kind == "candidate")
            && fields
                .get(MEMO)
                .is_some_and(|memo| erased.iter().any(|id| memo.ends_with(&id.to_string())));
        if ambassador_erased {
            fields[AMBASSADOR_NAME] = ERASED.to_owned();
            if fields[PAYEE_TYPE] == "ambassador" {
                fields[PAYEE_NAME] = ERASED.to_owned();
            }
        }
        if candidate_erased {
            fields[PAYEE_NAME] = ERASED.to_owned();
        }
        writer.write_record(&fields)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|error| csv::Error::from(error.into_error()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

async fn record_request(
    transaction: &mut Transaction<'_, Postgres>,
    metadata: &CommandMetadata,
    request_id: Uuid,
    kind: RequestKind,
    contact_keys: &[String],
    subjects: usize,
    sealed_export: Option<&Sealed>,
) -> Result<(), AppError> {
    let requested_by = match &metadata.actor {
        crate::event_store::Actor::User { id, .. } => id.0,
        crate::event_store::Actor::System { .. } => Uuid::nil(),
    };
    sqlx::query(
        "INSERT INTO subject_requests
             (request_id, agency_id, kind, status, requested_by, contact_keys, subjects,
              sealed_export, requested_at, completed_at)
         VALUES ($1, $2, $3, 'completed', $4, $5, $6, $7, $8, now())",
    )
    .bind(request_id)
    .bind(metadata.agency_id.0)
    .bind(kind.as_str())
    .bind(requested_by)
    .bind(contact_keys)
    .bind(i32::try_from(subjects).unwrap_or(i32::MAX))
    .bind(sealed_export.map(|sealed| sealed.0.as_str()))
    .bind(metadata.recorded_at)
    .execute(&mut **transaction)
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// Builds the export of everything held about the subjects of `agency_id` with one of
/// `keys`, stores it sealed under a data key of the request, records a
/// `SubjectAccessExported` event, and returns the request id and the export.
///
/// # Errors
/// [`AppError::Unavailable`] when the database fails, [`AppError::Internal`] when a
/// ciphertext does not open.
pub async fn export_access(
    app: &Application,
    metadata: &CommandMetadata,
    keys: &ContactKeys,
) -> Result<(Uuid, Value, Vec<SubjectRef>), AppError> {
    let agency_id = metadata.agency_id;
    let pool = app.pool();
    let subjects = find_subjects(pool, agency_id, keys).await?;
    let request_id = Uuid::now_v7();

    let mut documents = Vec::with_capacity(subjects.len());
    for subject in &subjects {
        let document = match subject.kind {
            SubjectKind::Candidate => candidate_document(app, agency_id, subject.id).await?,
            SubjectKind::Ambassador => ambassador_document(app, agency_id, subject.id).await?,
        };
        if let Some(document) = document {
            documents.push(document);
        }
    }
    let prior_contacts: Vec<chrono::NaiveDate> = sqlx::query_scalar(
        "SELECT last_contact_on FROM known_candidates
          WHERE agency_id = $1 AND contact_key = ANY($2) ORDER BY last_contact_on",
    )
    .bind(agency_id.0)
    .bind(key_texts(keys))
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    let subject_ids: Vec<Uuid> = subjects.iter().map(|subject| subject.id).collect();
    let notifications = notifications_sent(pool, agency_id, &subject_ids).await?;
    let export = json!({
        "request_id": request_id,
        "agency_id": agency_id.0,
        "generated_at": metadata.recorded_at,
        "subjects": documents,
        "prior_contacts": prior_contacts,
        "notifications": notifications,
    });

    let key = app
        .personal()
        .vault()
        .data_key_or_create(agency_id, request_id)
        .await?;
    let sealed = seal_field(
        &key,
        agency_id,
        request_id,
        Field::Note,
        &export.to_string(),
    );
    let mut transaction = pool.begin().await.map_err(unavailable)?;
    record_request(
        &mut transaction,
        metadata,
        request_id,
        RequestKind::Access,
        &key_texts(keys),
        subjects.len(),
        Some(&sealed),
    )
    .await?;
    transaction.commit().await.map_err(unavailable)?;

    let command = PrivacyCommand::RecordAccess {
        agency_id,
        subjects: subjects.clone(),
        at: metadata.recorded_at,
    };
    app.privacy
        .execute(&request_id.to_string(), command, metadata, None)
        .await?;
    Ok((request_id, export, subjects))
}

/// Lists the messages queued for or sent to the subjects `ids`: the outbox rows that name
/// one of them as recipient, with template, channel and status. Candidates receive no
/// messages, so only ambassador ids match.
async fn notifications_sent(
    pool: &PgPool,
    agency_id: AgencyId,
    ids: &[Uuid],
) -> Result<Vec<Value>, AppError> {
    sqlx::query_scalar(
        "SELECT jsonb_build_object('recipient_id', recipient_id, 'channel', channel,
                                   'template', template, 'referral_id', referral_id,
                                   'payout_id', payout_id, 'status', status,
                                   'created_at', created_at, 'sent_at', sent_at)
           FROM notifications.outbox
          WHERE agency_id = $1 AND recipient_kind = 'ambassador' AND recipient_id = ANY($2)
          ORDER BY id",
    )
    .bind(agency_id.0)
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(unavailable)
}

fn contact_json(opened: OpenedDetails) -> Value {
    match opened {
        OpenedDetails::Present { name, email, phone } => {
            json!({"name": name, "email": email, "phone": phone, "erased": false})
        }
        OpenedDetails::Erased => {
            json!({"name": ERASED, "email": null, "phone": null, "erased": true})
        }
    }
}

/// Rows of a read model as JSON objects, without the columns that hold ciphertext.
async fn read_model_rows(pool: &PgPool, sql: &str, id: Uuid) -> Result<Vec<Value>, AppError> {
    let rows: Vec<Value> = sqlx::query_scalar(sql)
        .bind(id)
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    Ok(rows
        .into_iter()
        .map(|mut row| {
            if let Value::Object(fields) = &mut row {
                fields.retain(|name, _| !name.ends_with("_sealed"));
            }
            row
        })
        .collect())
}

async fn candidate_document(
    app: &Application,
    agency_id: AgencyId,
    referral_id: Uuid,
) -> Result<Option<Value>, AppError> {
    let Some((referral, _)) = app
        .referrals
        .load(agency_id, &ReferralId(referral_id).to_string())
        .await?
    else {
        return Ok(None);
    };
    let Some(candidate) = referral.candidate() else {
        return Ok(None);
    };
    let sealed = SealedDetails {
        name: candidate.name.clone(),
        email: candidate.email.clone(),
        phone: candidate.phone.clone(),
    };
    let contact = app
        .personal()
        .open_contact(agency_id, referral_id, &sealed)
        .await?;
    let note = match referral.note() {
        Some(note) => match app
            .personal()
            .vault()
            .data_key(agency_id, referral_id)
            .await
        {
            Ok(key) => Some(
                open_field(&key, agency_id, referral_id, Field::Note, note)
                    .map_err(|error| AppError::Internal(error.to_string()))?,
            ),
            Err(KeyError::Erased) => Some(ERASED.to_owned()),
            Err(error) => return Err(error.into()),
        },
        None => None,
    };
    let pool = app.pool();
    let board = read_model_rows(
        pool,
        "SELECT to_jsonb(board) FROM read_models.referral_board AS board WHERE referral_id = $1",
        referral_id,
    )
    .await?;
    let payouts = read_model_rows(
        pool,
        "SELECT to_jsonb(ledger) FROM read_models.payout_ledger AS ledger
          WHERE referral_id = $1 ORDER BY requested_at, payout_id",
        referral_id,
    )
    .await?;
    Ok(Some(json!({
        "kind": "candidate",
        "id": referral_id,
        "contact": contact_json(contact),
        "referral": {
            "id": referral_id,
            "note": note,
            "job_reference": referral.job_reference(),
            "placement": referral.placement().map(|placement| serde_json::to_value(placement).unwrap_or(Value::Null)),
            "board": board.into_iter().next(),
        },
        "payouts": payouts,
    })))
}

async fn ambassador_document(
    app: &Application,
    agency_id: AgencyId,
    ambassador_id: Uuid,
) -> Result<Option<Value>, AppError> {
    let Some((ambassador, _)) = app
        .ambassadors
        .load(agency_id, &AmbassadorId(ambassador_id).to_string())
        .await?
    else {
        return Ok(None);
    };
    let Some(name) = ambassador.name() else {
        return Ok(None);
    };
    let sealed = SealedDetails {
        name: name.clone(),
        email: ambassador.email().cloned(),
        phone: ambassador.phone().cloned(),
    };
    let contact = app
        .personal()
        .open_contact(agency_id, ambassador_id, &sealed)
        .await?;
    let pool = app.pool();
    let profile = read_model_rows(
        pool,
        "SELECT to_jsonb(ambassador) FROM read_models.ambassadors AS ambassador
          WHERE ambassador_id = $1",
        ambassador_id,
    )
    .await?;
    // The referrals this person made, by id and status only: the candidates are other
    // people, whose names do not belong in this export.
    let referrals = read_model_rows(
        pool,
        "SELECT jsonb_build_object('referral_id', referral_id, 'program_id', program_id,
                                   'status', status, 'submitted_at', submitted_at,
                                   'hired_at', hired_at)
           FROM read_models.referral_board
          WHERE ambassador_id = $1 ORDER BY submitted_at, referral_id",
        ambassador_id,
    )
    .await?;
    let payouts = read_model_rows(
        pool,
        "SELECT to_jsonb(ledger) FROM read_models.payout_ledger AS ledger
          WHERE ambassador_id = $1 AND recipient = 'ambassador'
          ORDER BY requested_at, payout_id",
        ambassador_id,
    )
    .await?;
    Ok(Some(json!({
        "kind": "ambassador",
        "id": ambassador_id,
        "contact": contact_json(contact),
        "profile": profile.into_iter().next(),
        "referrals_made": referrals,
        "payouts": payouts,
    })))
}

/// Reads a subject request of `agency_id`, opening the export of an access request.
/// `None` when it does not exist or belongs to another agency.
///
/// # Errors
/// [`AppError::Unavailable`] when the database fails, [`AppError::Internal`] when the
/// export does not open.
pub async fn read_request(
    app: &Application,
    agency_id: AgencyId,
    request_id: Uuid,
) -> Result<Option<SubjectRequest>, AppError> {
    type Row = (
        String,
        String,
        i32,
        Option<String>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT kind, status, subjects, sealed_export, requested_at, completed_at
           FROM subject_requests WHERE request_id = $1 AND agency_id = $2",
    )
    .bind(request_id)
    .bind(agency_id.0)
    .fetch_optional(app.pool())
    .await
    .map_err(unavailable)?;
    let Some((kind, status, subjects, sealed_export, requested_at, completed_at)) = row else {
        return Ok(None);
    };
    let export = match sealed_export {
        Some(sealed) => {
            let key = app
                .personal()
                .vault()
                .data_key(agency_id, request_id)
                .await?;
            let text = open_field(&key, agency_id, request_id, Field::Note, &Sealed(sealed))
                .map_err(|error| AppError::Internal(error.to_string()))?;
            Some(
                serde_json::from_str::<Value>(&text)
                    .map_err(|error| AppError::Internal(error.to_string()))?,
            )
        }
        None => None,
    };
    let export_subjects = export
        .as_ref()
        .and_then(|export| export["subjects"].as_array())
        .map(|documents| {
            documents
                .iter()
                .filter_map(|document| {
                    let kind = parse_kind(document["kind"].as_str()?).ok()?;
                    let id = Uuid::parse_str(document["id"].as_str()?).ok()?;
                    Some(SubjectRef { kind, id })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(SubjectRequest {
        request_id,
        kind,
        status,
        subjects,
        requested_at,
        completed_at,
        export,
        export_subjects,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "payout_id,payee_type,payee_name,ambassador_external_id,ambassador_name,amount_minor_units,currency,memo\n\
        p1,ambassador,Ada Obi,E-1,Ada Obi,50000,USD,Referral bonus hired for referral 0191a0a0-0000-7000-8000-000000000001\n\
        p2,candidate,Ben Roe,E-2,Cy Dee,50000,USD,Referral bonus hired for referral 0191a0a0-0000-7000-8000-000000000002\n";

    fn id(last: u8) -> Uuid {
        Uuid::parse_str(&format!("0191a0a0-0000-7000-8000-0000000000{last:02}")).unwrap()
    }

    #[test]
    fn payroll_redaction_replaces_erased_ambassador() {
        let ambassadors = [id(10), id(11)];
        let redacted = redact_payroll_csv(FILE, &ambassadors, &[id(10)]).unwrap();
        assert!(!redacted.contains("Ada Obi"), "{redacted}");
        assert!(redacted.contains("Ben Roe"), "{redacted}");
        assert!(redacted.contains("Cy Dee"), "{redacted}");
    }

    #[test]
    fn payroll_redaction_replaces_erased_candidate_payee() {
        let ambassadors = [id(10), id(11)];
        let redacted = redact_payroll_csv(FILE, &ambassadors, &[id(2)]).unwrap();
        assert!(!redacted.contains("Ben Roe"), "{redacted}");
        assert!(redacted.contains("Cy Dee"), "{redacted}");
        assert!(redacted.contains("Ada Obi"), "{redacted}");
    }
}
