//! The privacy record aggregate: one completed subject request (access or erasure) of an
//! agency, or one off-boarding step (export or deletion) of an agency by a platform
//! operator.
//!
//! Its events name subjects only by id and kind, never by any personal field or keyed
//! hash, so they can stay in the event store after the person is erased. Off-boarding
//! records are stored under [`PLATFORM_AGENCY`] as tenant: they must outlive the agency
//! whose rows they describe.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{AgencyId, PLATFORM_AGENCY};
use crate::values::ValueError;

const AGGREGATE: &str = "privacy_record";

/// The kind of data subject a request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// The candidate of a referral; the subject id is the referral's id.
    Candidate,
    /// An ambassador; the subject id is the ambassador's id.
    Ambassador,
}

impl SubjectKind {
    /// Returns the kind's name in storage and in responses.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Ambassador => "ambassador",
        }
    }
}

/// One subject that a request found, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRef {
    /// Candidate or ambassador.
    pub kind: SubjectKind,
    /// The referral id of a candidate, or the ambassador id.
    pub id: uuid::Uuid,
}

/// Commands of the privacy record aggregate. Each record is written once.
#[derive(Debug, Clone, PartialEq)]
pub enum PrivacyCommand {
    /// Records a completed erasure in `agency_id`.
    RecordErasure {
        /// The agency whose subjects were erased.
        agency_id: AgencyId,
        /// The subjects whose data keys were destroyed.
        subjects: Vec<SubjectRef>,
        /// When the erasure completed.
        at: DateTime<Utc>,
    },
    /// Records a completed access request in `agency_id`.
    RecordAccess {
        /// The agency the request was made in.
        agency_id: AgencyId,
        /// The subjects whose data the export contains.
        subjects: Vec<SubjectRef>,
        /// When the export was produced.
        at: DateTime<Utc>,
    },
    /// Records that a platform operator exported an agency's data.
    RecordAgencyExport {
        /// The exported agency.
        agency_id: AgencyId,
        /// The number of events in the export.
        events: u64,
        /// When the export was produced.
        at: DateTime<Utc>,
    },
    /// Records that a platform operator deleted an agency's data and keys.
    RecordAgencyDeletion {
        /// The deleted agency.
        agency_id: AgencyId,
        /// The number of rows deleted, over every table.
        rows: u64,
        /// When the deletion committed.
        at: DateTime<Utc>,
    },
}

/// Events of the privacy record aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PrivacyEvent {
    /// The data keys of these subjects were destroyed and their keyed hashes removed.
    SubjectsErased {
        /// The agency of the subjects.
        agency_id: AgencyId,
        /// The erased subjects.
        subjects: Vec<SubjectRef>,
        /// When the erasure completed.
        at: DateTime<Utc>,
    },
    /// An export of everything held about these subjects was produced.
    SubjectAccessExported {
        /// The agency of the subjects.
        agency_id: AgencyId,
        /// The subjects in the export.
        subjects: Vec<SubjectRef>,
        /// When the export was produced.
        at: DateTime<Utc>,
    },
    /// A full export of an agency was returned to a platform operator.
    AgencyExported {
        /// The exported agency.
        agency_id: AgencyId,
        /// The number of events in the export.
        events: u64,
        /// When the export was produced.
        at: DateTime<Utc>,
    },
    /// Every row and key of an agency was deleted.
    AgencyDeleted {
        /// The deleted agency.
        agency_id: AgencyId,
        /// The number of rows deleted, over every table.
        rows: u64,
        /// When the deletion committed.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for PrivacyEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::SubjectsErased { .. } => "SubjectsErased",
            Self::SubjectAccessExported { .. } => "SubjectAccessExported",
            Self::AgencyExported { .. } => "AgencyExported",
            Self::AgencyDeleted { .. } => "AgencyDeleted",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// One privacy record. Empty (`Default`) until its event is applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivacyRecord {
    tenant: Option<AgencyId>,
}

impl PrivacyRecord {
    /// Returns the tenant the record is stored under: the agency for subject requests,
    /// [`PLATFORM_AGENCY`] for off-boarding records.
    #[must_use]
    pub fn agency_id(&self) -> Option<AgencyId> {
        self.tenant
    }

    fn decide(&self, command: PrivacyCommand) -> Result<PrivacyEvent, DomainError> {
        if self.tenant.is_some() {
            return Err(DomainError::AlreadyExists {
                aggregate: AGGREGATE,
            });
        }
        let event = match command {
            PrivacyCommand::RecordErasure {
                agency_id,
                subjects,
                at,
            } => PrivacyEvent::SubjectsErased {
                agency_id: agency_of_subjects(agency_id)?,
                subjects,
                at,
            },
            PrivacyCommand::RecordAccess {
                agency_id,
                subjects,
                at,
            } => PrivacyEvent::SubjectAccessExported {
                agency_id: agency_of_subjects(agency_id)?,
                subjects,
                at,
            },
            PrivacyCommand::RecordAgencyExport {
                agency_id,
                events,
                at,
            } => PrivacyEvent::AgencyExported {
                agency_id: agency_of_subjects(agency_id)?,
                events,
                at,
            },
            PrivacyCommand::RecordAgencyDeletion {
                agency_id,
                rows,
                at,
            } => PrivacyEvent::AgencyDeleted {
                agency_id: agency_of_subjects(agency_id)?,
                rows,
                at,
            },
        };
        Ok(event)
    }
}

/// Rejects the platform tenant, which has no data subjects and cannot be off-boarded.
fn agency_of_subjects(agency_id: AgencyId) -> Result<AgencyId, DomainError> {
    if agency_id == PLATFORM_AGENCY {
        return Err(ValueError::new(
            "agency_id",
            "is the nil UUID, which is reserved for platform records; name an agency",
        )
        .into());
    }
    Ok(agency_id)
}

impl Aggregate for PrivacyRecord {
    const TYPE: &'static str = AGGREGATE;
    type Command = PrivacyCommand;
    type Event = PrivacyEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.tenant = Some(match event {
            PrivacyEvent::SubjectsErased { agency_id, .. }
            | PrivacyEvent::SubjectAccessExported { agency_id, .. } => agency_id,
            PrivacyEvent::AgencyExported { .. } | PrivacyEvent::AgencyDeleted { .. } => {
                PLATFORM_AGENCY
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erasure(agency_id: AgencyId) -> PrivacyCommand {
        PrivacyCommand::RecordErasure {
            agency_id,
            subjects: vec![SubjectRef {
                kind: SubjectKind::Candidate,
                id: uuid::Uuid::now_v7(),
            }],
            at: Utc::now(),
        }
    }

    #[test]
    fn erasure_record_belongs_to_agency() {
        let agency_id = AgencyId(uuid::Uuid::now_v7());
        let mut record = PrivacyRecord::default();

        let event = record.decide(erasure(agency_id)).unwrap();
        record.apply(event);

        assert_eq!(record.agency_id(), Some(agency_id));
    }

    #[test]
    fn deletion_record_belongs_to_platform() {
        let mut record = PrivacyRecord::default();
        let command = PrivacyCommand::RecordAgencyDeletion {
            agency_id: AgencyId(uuid::Uuid::now_v7()),
            rows: 12,
            at: Utc::now(),
        };

        let event = record.decide(command).unwrap();
        record.apply(event);

        assert_eq!(record.agency_id(), Some(PLATFORM_AGENCY));
    }

    #[test]
    fn record_is_written_once() {
        let agency_id = AgencyId(uuid::Uuid::now_v7());
        let mut record = PrivacyRecord::default();
        let event = record.decide(erasure(agency_id)).unwrap();
        record.apply(event);

        let again = record.decide(erasure(agency_id));

        assert!(
            matches!(again, Err(DomainError::AlreadyExists { .. })),
            "{again:?}"
        );
    }

    #[test]
    fn platform_tenant_is_rejected() {
        let record = PrivacyRecord::default();

        let outcome = record.decide(erasure(PLATFORM_AGENCY));

        assert!(outcome.is_err(), "{outcome:?}");
    }
}
