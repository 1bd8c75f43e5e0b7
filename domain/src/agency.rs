//! The agency aggregate: a tenant's name and its account-wide settings.
//!
//! An agency's events are stored under the agency itself as tenant, so the store's
//! tenant check shows an agency only to its own users and to the platform code that
//! created it.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{AgencyId, PLATFORM_AGENCY};
use crate::values::{parse_label, ValueError};

const AGGREGATE: &str = "agency";

/// Maximum length of an agency name in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Creates an agency. Texting is off until [`SetTexting`] enables it.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateAgency {
    /// Id of the new agency; never [`PLATFORM_AGENCY`].
    pub agency_id: AgencyId,
    /// Display name, 1 to 200 characters on one line.
    pub name: String,
    /// When the agency is created.
    pub at: DateTime<Utc>,
}

/// Enables or disables text messages (SMS) to the agency's ambassadors.
#[derive(Debug, Clone, PartialEq)]
pub struct SetTexting {
    /// Whether texting is enabled.
    pub enabled: bool,
    /// When the setting changes.
    pub at: DateTime<Utc>,
}

/// Commands of the agency aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum AgencyCommand {
    /// See [`CreateAgency`].
    CreateAgency(CreateAgency),
    /// See [`SetTexting`].
    SetTexting(SetTexting),
}

/// Events of the agency aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgencyEvent {
    /// The agency was created, with texting disabled.
    AgencyCreated {
        /// Id of the agency.
        agency_id: AgencyId,
        /// Trimmed display name.
        name: String,
        /// When it was created.
        at: DateTime<Utc>,
    },
    /// Texting was enabled or disabled.
    AgencyTextingSet {
        /// Whether texting is now enabled.
        enabled: bool,
        /// When the setting changed.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AgencyEvent {
    fn event_type(&self) -> String {
        let name = match self {
            AgencyEvent::AgencyCreated { .. } => "AgencyCreated",
            AgencyEvent::AgencyTextingSet { .. } => "AgencyTextingSet",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AgencyState {
    agency_id: AgencyId,
    name: String,
    texting_enabled: bool,
}

/// A tenant of the platform. Empty (`Default`) until `AgencyCreated` is applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Agency {
    state: Option<AgencyState>,
}

impl Agency {
    /// Returns the id of the agency, or `None` when it does not exist.
    #[must_use]
    pub fn agency_id(&self) -> Option<AgencyId> {
        self.state.as_ref().map(|s| s.agency_id)
    }

    /// Returns the display name.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.state.as_ref().map(|s| s.name.as_str())
    }

    /// Returns whether the agency exists and has texting enabled.
    #[must_use]
    pub fn texting_enabled(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.texting_enabled)
    }

    fn decide(&self, command: AgencyCommand) -> Result<Vec<AgencyEvent>, DomainError> {
        match command {
            AgencyCommand::CreateAgency(create) => self.create(create),
            AgencyCommand::SetTexting(set) => self.set_texting(set),
        }
    }

    fn create(&self, create: CreateAgency) -> Result<Vec<AgencyEvent>, DomainError> {
        if self.state.is_some() {
            return Err(DomainError::AlreadyExists {
                aggregate: AGGREGATE,
            });
        }
        if create.agency_id == PLATFORM_AGENCY {
            return Err(ValueError::new(
                "agency_id",
                "is the nil UUID, which is reserved for platform records; use a new id",
            )
            .into());
        }
        let name = parse_label("name", &create.name, MAX_NAME_CHARS)?;

        Ok(vec![AgencyEvent::AgencyCreated {
            agency_id: create.agency_id,
            name,
            at: create.at,
        }])
    }

    fn set_texting(&self, set: SetTexting) -> Result<Vec<AgencyEvent>, DomainError> {
        let state = self.state.as_ref().ok_or(DomainError::NotFound {
            aggregate: AGGREGATE,
        })?;
        // Setting the current value again records nothing, so a retried request is quiet.
        if state.texting_enabled == set.enabled {
            return Ok(vec![]);
        }
        Ok(vec![AgencyEvent::AgencyTextingSet {
            enabled: set.enabled,
            at: set.at,
        }])
    }
}

impl Aggregate for Agency {
    const TYPE: &'static str = AGGREGATE;
    type Command = AgencyCommand;
    type Event = AgencyEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AgencyEvent::AgencyCreated {
                agency_id,
                name,
                at: _,
            } => {
                self.state = Some(AgencyState {
                    agency_id,
                    name,
                    texting_enabled: false,
                });
            }
            AgencyEvent::AgencyTextingSet { enabled, at: _ } => {
                if let Some(state) = self.state.as_mut() {
                    state.texting_enabled = enabled;
                }
            }
        }
    }
}

impl From<CreateAgency> for AgencyCommand {
    fn from(command: CreateAgency) -> Self {
        AgencyCommand::CreateAgency(command)
    }
}

impl From<SetTexting> for AgencyCommand {
    fn from(command: SetTexting) -> Self {
        AgencyCommand::SetTexting(command)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;

    type AgencyTest = TestFramework<Agency>;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, day, 9, 0, 0).unwrap()
    }

    fn agency_id() -> AgencyId {
        AgencyId(uuid::uuid!("0195a0b0-0000-7000-8000-0000000000a1"))
    }

    fn create(agency_id: AgencyId, name: &str) -> AgencyCommand {
        CreateAgency {
            agency_id,
            name: name.to_owned(),
            at: at(1),
        }
        .into()
    }

    fn created() -> AgencyEvent {
        AgencyEvent::AgencyCreated {
            agency_id: agency_id(),
            name: "Northwind Staffing".to_owned(),
            at: at(1),
        }
    }

    fn texting(enabled: bool, day: u32) -> AgencyEvent {
        AgencyEvent::AgencyTextingSet {
            enabled,
            at: at(day),
        }
    }

    #[tokio::test]
    async fn create_agency_trims_the_name() {
        AgencyTest::with(())
            .given_no_previous_events()
            .when_async(create(agency_id(), "  Northwind Staffing "))
            .await
            .then_expect_events(vec![created()]);
    }

    #[tokio::test]
    async fn create_agency_with_blank_name_is_rejected() {
        let error = AgencyTest::with(())
            .given_no_previous_events()
            .when_async(create(agency_id(), "   "))
            .await
            .inspect_result()
            .unwrap_err();

        assert_eq!(error.code(), "invalid_value");
    }

    #[tokio::test]
    async fn create_agency_with_platform_id_is_rejected() {
        let error = AgencyTest::with(())
            .given_no_previous_events()
            .when_async(create(PLATFORM_AGENCY, "Northwind Staffing"))
            .await
            .inspect_result()
            .unwrap_err();

        let DomainError::Invalid(value_error) = error else {
            panic!("expected an invalid value, got {error:?}");
        };
        assert_eq!(value_error.field, "agency_id");
    }

    #[tokio::test]
    async fn create_agency_twice_is_rejected() {
        AgencyTest::with(())
            .given(vec![created()])
            .when_async(create(agency_id(), "Northwind Staffing"))
            .await
            .then_expect_error(DomainError::AlreadyExists {
                aggregate: "agency",
            });
    }

    #[tokio::test]
    async fn set_texting_enables_it() {
        AgencyTest::with(())
            .given(vec![created()])
            .when_async(
                SetTexting {
                    enabled: true,
                    at: at(2),
                }
                .into(),
            )
            .await
            .then_expect_events(vec![texting(true, 2)]);
    }

    #[tokio::test]
    async fn set_texting_to_current_value_records_nothing() {
        AgencyTest::with(())
            .given(vec![created(), texting(true, 2)])
            .when_async(
                SetTexting {
                    enabled: true,
                    at: at(3),
                }
                .into(),
            )
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn set_texting_of_unknown_agency_is_not_found() {
        AgencyTest::with(())
            .given_no_previous_events()
            .when_async(
                SetTexting {
                    enabled: true,
                    at: at(2),
                }
                .into(),
            )
            .await
            .then_expect_error(DomainError::NotFound {
                aggregate: "agency",
            });
    }

    #[test]
    fn texting_is_off_after_creation() {
        let mut agency = Agency::default();
        agency.apply(created());

        assert!(!agency.texting_enabled());
        assert_eq!(agency.name(), Some("Northwind Staffing"));

        agency.apply(texting(true, 2));
        assert!(agency.texting_enabled());
    }
}
