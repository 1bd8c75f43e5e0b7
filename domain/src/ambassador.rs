//! The ambassador aggregate: a person who refers candidates, their kind, sealed
//! contact details, SMS consent and whether they are active.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{AgencyId, AmbassadorId};
use crate::referral::AmbassadorSnapshot;
use crate::terms::AmbassadorKind;
use crate::values::{parse_label, ContactKeys, Sealed, ValueError};

const AGGREGATE: &str = "ambassador";

/// Maximum length of an external id (such as a payroll or HR system id) in characters.
pub const MAX_EXTERNAL_ID_CHARS: usize = 100;

/// Enrolls a new ambassador.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollAmbassador {
    /// Id of the new ambassador.
    pub ambassador_id: AmbassadorId,
    /// Agency the ambassador refers for.
    pub agency_id: AgencyId,
    /// Kind of ambassador; agency staff can enroll but never earn a bonus.
    pub kind: AmbassadorKind,
    /// Sealed name.
    pub name: Sealed,
    /// Sealed normalized e-mail address, if known.
    pub email: Option<Sealed>,
    /// Sealed E.164 phone number, if known.
    pub phone: Option<Sealed>,
    /// Id in the agency's own systems, 1 to 100 printable characters.
    pub external_id: Option<String>,
    /// Whether the ambassador agreed to receive text messages.
    pub sms_consent: bool,
    /// When the ambassador enrolled.
    pub at: DateTime<Utc>,
}

/// Changes some of an ambassador's details; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateAmbassador {
    /// New sealed name.
    pub name: Option<Sealed>,
    /// New sealed e-mail address.
    pub email: Option<Sealed>,
    /// New sealed phone number.
    pub phone: Option<Sealed>,
    /// New kind.
    pub kind: Option<AmbassadorKind>,
    /// New SMS consent; `Some(false)` records an opt-out.
    pub sms_consent: Option<bool>,
    /// New external id, 1 to 100 printable characters.
    pub external_id: Option<String>,
    /// When the change is made.
    pub at: DateTime<Utc>,
}

/// Deactivates an ambassador, who then cannot refer candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct DeactivateAmbassador {
    /// When the ambassador is deactivated.
    pub at: DateTime<Utc>,
}

/// Commands of the ambassador aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum AmbassadorCommand {
    /// See [`EnrollAmbassador`].
    EnrollAmbassador(EnrollAmbassador),
    /// See [`UpdateAmbassador`].
    UpdateAmbassador(UpdateAmbassador),
    /// See [`DeactivateAmbassador`].
    DeactivateAmbassador(DeactivateAmbassador),
}

/// Events of the ambassador aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AmbassadorEvent {
    /// The ambassador was enrolled and is active.
    AmbassadorEnrolled {
        /// Id of the ambassador.
        ambassador_id: AmbassadorId,
        /// Agency the ambassador refers for.
        agency_id: AgencyId,
        /// Kind of ambassador.
        kind: AmbassadorKind,
        /// Sealed name.
        name: Sealed,
        /// Sealed e-mail address.
        email: Option<Sealed>,
        /// Sealed phone number.
        phone: Option<Sealed>,
        /// Trimmed external id.
        external_id: Option<String>,
        /// Whether text messages are allowed.
        sms_consent: bool,
        /// When the ambassador enrolled.
        at: DateTime<Utc>,
    },
    /// Some details changed; only the changed fields are `Some`.
    AmbassadorUpdated {
        /// New sealed name.
        name: Option<Sealed>,
        /// New sealed e-mail address.
        email: Option<Sealed>,
        /// New sealed phone number.
        phone: Option<Sealed>,
        /// New kind.
        kind: Option<AmbassadorKind>,
        /// New SMS consent.
        sms_consent: Option<bool>,
        /// New trimmed external id.
        external_id: Option<String>,
        /// When the change was made.
        at: DateTime<Utc>,
    },
    /// The ambassador was deactivated.
    AmbassadorDeactivated {
        /// When the ambassador was deactivated.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AmbassadorEvent {
    fn event_type(&self) -> String {
        let name = match self {
            AmbassadorEvent::AmbassadorEnrolled { .. } => "AmbassadorEnrolled",
            AmbassadorEvent::AmbassadorUpdated { .. } => "AmbassadorUpdated",
            AmbassadorEvent::AmbassadorDeactivated { .. } => "AmbassadorDeactivated",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AmbassadorState {
    ambassador_id: AmbassadorId,
    agency_id: AgencyId,
    kind: AmbassadorKind,
    name: Sealed,
    email: Option<Sealed>,
    phone: Option<Sealed>,
    external_id: Option<String>,
    sms_consent: bool,
    active: bool,
}

/// An ambassador. Empty (`Default`) until `AmbassadorEnrolled` is applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ambassador {
    state: Option<AmbassadorState>,
}

impl Ambassador {
    /// Returns the id of the ambassador, or `None` when not enrolled.
    #[must_use]
    pub fn ambassador_id(&self) -> Option<AmbassadorId> {
        self.state.as_ref().map(|s| s.ambassador_id)
    }

    /// Returns the agency the ambassador refers candidates to.
    #[must_use]
    pub fn agency_id(&self) -> Option<AgencyId> {
        self.state.as_ref().map(|s| s.agency_id)
    }

    /// Returns whether the ambassador is enrolled and not deactivated.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.active)
    }

    /// Returns the kind of ambassador.
    #[must_use]
    pub fn kind(&self) -> Option<AmbassadorKind> {
        self.state.as_ref().map(|s| s.kind)
    }

    /// Returns the sealed name.
    #[must_use]
    pub fn name(&self) -> Option<&Sealed> {
        self.state.as_ref().map(|s| &s.name)
    }

    /// Returns the sealed e-mail address, if the ambassador has one.
    #[must_use]
    pub fn email(&self) -> Option<&Sealed> {
        self.state.as_ref().and_then(|s| s.email.as_ref())
    }

    /// Returns the sealed phone number, if the ambassador has one.
    #[must_use]
    pub fn phone(&self) -> Option<&Sealed> {
        self.state.as_ref().and_then(|s| s.phone.as_ref())
    }

    /// Returns the external id, when one was given.
    #[must_use]
    pub fn external_id(&self) -> Option<&str> {
        self.state.as_ref().and_then(|s| s.external_id.as_deref())
    }

    /// Returns whether the ambassador is enrolled and agreed to text messages.
    #[must_use]
    pub fn sms_consent(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.sms_consent)
    }

    /// Builds the snapshot of the ambassador that a new referral is judged on. The
    /// caller computes `contact_keys` from the opened contact details, because the
    /// aggregate stores only ciphertext.
    #[must_use]
    pub fn snapshot(&self, contact_keys: ContactKeys) -> Option<AmbassadorSnapshot> {
        self.state.as_ref().map(|s| AmbassadorSnapshot {
            ambassador_id: s.ambassador_id,
            kind: s.kind,
            active: s.active,
            contact_keys,
        })
    }

    fn decide(&self, command: AmbassadorCommand) -> Result<Vec<AmbassadorEvent>, DomainError> {
        match command {
            AmbassadorCommand::EnrollAmbassador(enroll) => self.enroll(enroll),
            AmbassadorCommand::UpdateAmbassador(update) => self.update(update),
            AmbassadorCommand::DeactivateAmbassador(deactivate) => {
                let state = self.existing()?;
                // Deactivating twice changes nothing, so a retried request succeeds quietly.
                if !state.active {
                    return Ok(vec![]);
                }
                Ok(vec![AmbassadorEvent::AmbassadorDeactivated {
                    at: deactivate.at,
                }])
            }
        }
    }

    fn enroll(&self, enroll: EnrollAmbassador) -> Result<Vec<AmbassadorEvent>, DomainError> {
        if self.state.is_some() {
            return Err(DomainError::AlreadyExists {
                aggregate: AGGREGATE,
            });
        }
        let external_id = enroll
            .external_id
            .as_deref()
            .map(parse_external_id)
            .transpose()?;

        Ok(vec![AmbassadorEvent::AmbassadorEnrolled {
            ambassador_id: enroll.ambassador_id,
            agency_id: enroll.agency_id,
            kind: enroll.kind,
            name: enroll.name,
            email: enroll.email,
            phone: enroll.phone,
            external_id,
            sms_consent: enroll.sms_consent,
            at: enroll.at,
        }])
    }

    /// Emits one event with the fields that differ from the current state.
    ///
    /// Updates are allowed after deactivation, because a person may still ask for
    /// their details to be corrected. Sealed values count as changed whenever the
    /// ciphertext differs, since the domain cannot compare plaintext.
    fn update(&self, update: UpdateAmbassador) -> Result<Vec<AmbassadorEvent>, DomainError> {
        let state = self.existing()?;
        let external_id = update
            .external_id
            .as_deref()
            .map(parse_external_id)
            .transpose()?;

        fn changed<T: PartialEq>(new: Option<T>, current: Option<&T>) -> Option<T> {
            new.filter(|value| Some(value) != current)
        }
        let name = changed(update.name, Some(&state.name));
        let email = changed(update.email, state.email.as_ref());
        let phone = changed(update.phone, state.phone.as_ref());
        let kind = changed(update.kind, Some(&state.kind));
        let sms_consent = changed(update.sms_consent, Some(&state.sms_consent));
        let external_id = changed(external_id, state.external_id.as_ref());

        let nothing_changed = name.is_none()
            && email.is_none()
            && phone.is_none()
            && kind.is_none()
            && sms_consent.is_none()
            && external_id.is_none();
        if nothing_changed {
            return Ok(vec![]);
        }
        Ok(vec![AmbassadorEvent::AmbassadorUpdated {
            name,
            email,
            phone,
            kind,
            sms_consent,
            external_id,
            at: update.at,
        }])
    }

    fn existing(&self) -> Result<&AmbassadorState, DomainError> {
        self.state.as_ref().ok_or(DomainError::NotFound {
            aggregate: AGGREGATE,
        })
    }
}

fn parse_external_id(raw: &str) -> Result<String, ValueError> {
    parse_label("external_id", raw, MAX_EXTERNAL_ID_CHARS)
}

impl Aggregate for Ambassador {
    const TYPE: &'static str = AGGREGATE;
    type Command = AmbassadorCommand;
    type Event = AmbassadorEvent;
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
            AmbassadorEvent::AmbassadorEnrolled {
                ambassador_id,
                agency_id,
                kind,
                name,
                email,
                phone,
                external_id,
                sms_consent,
                at: _,
            } => {
                self.state = Some(AmbassadorState {
                    ambassador_id,
                    agency_id,
                    kind,
                    name,
                    email,
                    phone,
                    external_id,
                    sms_consent,
                    active: true,
                });
            }
            AmbassadorEvent::AmbassadorUpdated {
                name,
                email,
                phone,
                kind,
                sms_consent,
                external_id,
                at: _,
            } => {
                let Some(state) = self.state.as_mut() else {
                    return;
                };
                if let Some(name) = name {
                    state.name = name;
                }
                if email.is_some() {
                    state.email = email;
                }
                if phone.is_some() {
                    state.phone = phone;
                }
                if let Some(kind) = kind {
                    state.kind = kind;
                }
                if let Some(sms_consent) = sms_consent {
                    state.sms_consent = sms_consent;
                }
                if external_id.is_some() {
                    state.external_id = external_id;
                }
            }
            AmbassadorEvent::AmbassadorDeactivated { at: _ } => {
                if let Some(state) = self.state.as_mut() {
                    state.active = false;
                }
            }
        }
    }
}

impl From<EnrollAmbassador> for AmbassadorCommand {
    fn from(command: EnrollAmbassador) -> Self {
        AmbassadorCommand::EnrollAmbassador(command)
    }
}

impl From<UpdateAmbassador> for AmbassadorCommand {
    fn from(command: UpdateAmbassador) -> Self {
        AmbassadorCommand::UpdateAmbassador(command)
    }
}

impl From<DeactivateAmbassador> for AmbassadorCommand {
    fn from(command: DeactivateAmbassador) -> Self {
        AmbassadorCommand::DeactivateAmbassador(command)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;

    type AmbassadorTest = TestFramework<Ambassador>;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 4, day, 9, 0, 0).unwrap()
    }

    fn sealed(text: &str) -> Sealed {
        Sealed(text.to_owned())
    }

    fn ids() -> (AmbassadorId, AgencyId) {
        (
            AmbassadorId(uuid::uuid!("0195a0b0-0000-7000-8000-0000000000b1")),
            AgencyId(uuid::uuid!("0195a0b0-0000-7000-8000-0000000000a1")),
        )
    }

    fn enroll(external_id: Option<&str>) -> AmbassadorCommand {
        let (ambassador_id, agency_id) = ids();
        EnrollAmbassador {
            ambassador_id,
            agency_id,
            kind: AmbassadorKind::FieldWorker,
            name: sealed("sealed-name"),
            email: Some(sealed("sealed-email")),
            phone: None,
            external_id: external_id.map(str::to_owned),
            sms_consent: true,
            at: at(1),
        }
        .into()
    }

    fn enrolled() -> AmbassadorEvent {
        let (ambassador_id, agency_id) = ids();
        AmbassadorEvent::AmbassadorEnrolled {
            ambassador_id,
            agency_id,
            kind: AmbassadorKind::FieldWorker,
            name: sealed("sealed-name"),
            email: Some(sealed("sealed-email")),
            phone: None,
            external_id: Some("EMP-0042".to_owned()),
            sms_consent: true,
            at: at(1),
        }
    }

    #[tokio::test]
    async fn enroll_ambassador_records_the_enrollment() {
        AmbassadorTest::with(())
            .given_no_previous_events()
            .when_async(enroll(Some(" EMP-0042 ")))
            .await
            .then_expect_events(vec![enrolled()]);
    }

    #[tokio::test]
    async fn enroll_ambassador_with_overlong_external_id_is_rejected() {
        let error = AmbassadorTest::with(())
            .given_no_previous_events()
            .when_async(enroll(Some(&"x".repeat(101))))
            .await
            .inspect_result()
            .unwrap_err();

        let DomainError::Invalid(value_error) = error else {
            panic!("expected an invalid value, got {error:?}");
        };
        assert_eq!(value_error.field, "external_id");
    }

    #[tokio::test]
    async fn enroll_ambassador_twice_is_rejected() {
        AmbassadorTest::with(())
            .given(vec![enrolled()])
            .when_async(enroll(Some("EMP-0042")))
            .await
            .then_expect_error(DomainError::AlreadyExists {
                aggregate: "ambassador",
            });
    }

    #[tokio::test]
    async fn update_ambassador_records_only_changed_fields() {
        AmbassadorTest::with(())
            .given(vec![enrolled()])
            .when_async(
                UpdateAmbassador {
                    phone: Some(sealed("sealed-phone")),
                    kind: Some(AmbassadorKind::FieldWorker),
                    sms_consent: Some(false),
                    external_id: Some("EMP-0042".to_owned()),
                    at: at(2),
                    ..UpdateAmbassador::default()
                }
                .into(),
            )
            .await
            .then_expect_events(vec![AmbassadorEvent::AmbassadorUpdated {
                name: None,
                email: None,
                phone: Some(sealed("sealed-phone")),
                kind: None,
                sms_consent: Some(false),
                external_id: None,
                at: at(2),
            }]);
    }

    #[tokio::test]
    async fn update_ambassador_without_changes_emits_nothing() {
        AmbassadorTest::with(())
            .given(vec![enrolled()])
            .when_async(
                UpdateAmbassador {
                    sms_consent: Some(true),
                    at: at(2),
                    ..UpdateAmbassador::default()
                }
                .into(),
            )
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn update_unknown_ambassador_is_not_found() {
        AmbassadorTest::with(())
            .given_no_previous_events()
            .when_async(
                UpdateAmbassador {
                    kind: Some(AmbassadorKind::External),
                    at: at(2),
                    ..UpdateAmbassador::default()
                }
                .into(),
            )
            .await
            .then_expect_error(DomainError::NotFound {
                aggregate: "ambassador",
            });
    }

    #[tokio::test]
    async fn deactivate_ambassador_deactivates() {
        AmbassadorTest::with(())
            .given(vec![enrolled()])
            .when_async(DeactivateAmbassador { at: at(3) }.into())
            .await
            .then_expect_events(vec![AmbassadorEvent::AmbassadorDeactivated { at: at(3) }]);
    }

    #[tokio::test]
    async fn deactivate_ambassador_again_changes_nothing() {
        AmbassadorTest::with(())
            .given(vec![
                enrolled(),
                AmbassadorEvent::AmbassadorDeactivated { at: at(3) },
            ])
            .when_async(DeactivateAmbassador { at: at(4) }.into())
            .await
            .then_expect_events(vec![]);
    }

    #[test]
    fn accessors_follow_the_events() {
        let mut ambassador = Ambassador::default();
        assert!(!ambassador.is_active());
        assert_eq!(ambassador.kind(), None);

        ambassador.apply(enrolled());
        ambassador.apply(AmbassadorEvent::AmbassadorUpdated {
            name: None,
            email: None,
            phone: None,
            kind: Some(AmbassadorKind::FormerWorker),
            sms_consent: None,
            external_id: None,
            at: at(2),
        });
        assert!(ambassador.is_active());
        assert_eq!(ambassador.kind(), Some(AmbassadorKind::FormerWorker));

        ambassador.apply(AmbassadorEvent::AmbassadorDeactivated { at: at(3) });
        assert!(!ambassador.is_active());
        assert!(!ambassador.snapshot(ContactKeys::default()).unwrap().active);
    }
}
