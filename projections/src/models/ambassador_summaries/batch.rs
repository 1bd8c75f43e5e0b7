//! The batch path of the ambassador summaries: folds a batch of events into the rows of
//! the four tables in memory and writes each changed row once.
//!
//! The event-by-event path recounts an ambassador's figures from the lookup tables after
//! each change. This path keeps the same counts and sums in memory, per ambassador and,
//! for payouts, per currency. It reads them once from the lookup tables and adjusts them
//! for every lookup row that a batch event changes. Where the event-by-event path would
//! recount, it copies them into the summary or earnings row. So a row that the
//! event-by-event path leaves stale, because no later event recounts it, stays just as
//! stale here.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use referrals_domain::ambassador::AmbassadorEvent;
use referrals_domain::payout::{PayoutEvent, PayoutStatus};
use referrals_domain::referral::{ReferralEvent, ReferralStatus};
use referrals_domain::terms::Recipient;
use sqlx::PgConnection;
use uuid::Uuid;

use super::missing_lookup;
use crate::models::{aggregate_uuid, decode, missing_row, Decoded};
use crate::{ProjectionError, StoredEvent};

mod tables;

/// Applies `events` in order with the same result as applying each with
/// [`AmbassadorSummariesProjection::apply`](super::AmbassadorSummariesProjection).
///
/// # Errors
/// [`ProjectionError::Poison`] for an event that the event-by-event path stops at, and
/// [`ProjectionError::Transient`] for a database failure that may pass.
pub(super) async fn apply_batch(
    connection: &mut PgConnection,
    events: &[StoredEvent],
) -> Result<(), ProjectionError> {
    let mut changes = Vec::new();
    for event in events {
        let change = match decode(event)? {
            Some(Decoded::Ambassador(ambassador_event)) => {
                let ambassador_id = aggregate_uuid(event)?;
                ambassador_change(ambassador_event).map(|change| (ambassador_id, change))
            }
            Some(Decoded::Referral(referral_event)) => {
                let referral_id = aggregate_uuid(event)?;
                referral_change(referral_event).map(|change| (referral_id, change))
            }
            Some(Decoded::Payout(payout_event)) => {
                let payout_id = aggregate_uuid(event)?;
                payout_change(payout_event).map(|change| (payout_id, change))
            }
            Some(Decoded::Program(_)) | None => None,
        };
        if let Some((id, change)) = change {
            changes.push((event, id, change));
        }
    }
    if changes.is_empty() {
        return Ok(());
    }

    let mut state = Fold::read(connection, &changes).await?;
    for (event, id, change) in changes {
        state.apply(event, id, change)?;
    }
    state.write(connection).await
}

/// The change that one event makes, reduced to the fields the summaries use. The id that
/// goes with it is the event's aggregate: an ambassador, a referral or a payout.
#[derive(Debug)]
enum Change {
    Enrolled {
        agency_id: Uuid,
        kind: &'static str,
    },
    KindChanged {
        kind: &'static str,
    },
    Deactivated,
    ReferralSubmitted {
        ambassador_id: Uuid,
        duplicate: bool,
    },
    ReferralHired,
    MilestoneReached,
    PayoutRequested {
        ambassador_id: Uuid,
        recipient: &'static str,
        amount: i64,
        currency: String,
    },
    PayoutStatusChanged {
        status: PayoutStatus,
    },
}

fn ambassador_change(ambassador_event: AmbassadorEvent) -> Option<Change> {
    match ambassador_event {
        AmbassadorEvent::AmbassadorEnrolled {
            agency_id, kind, ..
        } => Some(Change::Enrolled {
            agency_id: agency_id.0,
            kind: kind.as_str(),
        }),
        AmbassadorEvent::AmbassadorUpdated {
            kind: Some(kind), ..
        } => Some(Change::KindChanged {
            kind: kind.as_str(),
        }),
        AmbassadorEvent::AmbassadorUpdated { kind: None, .. } => None,
        AmbassadorEvent::AmbassadorDeactivated { .. } => Some(Change::Deactivated),
    }
}

fn referral_change(referral_event: ReferralEvent) -> Option<Change> {
    match referral_event {
        ReferralEvent::ReferralSubmitted {
            ambassador_id,
            status,
            ..
        } => Some(Change::ReferralSubmitted {
            ambassador_id: ambassador_id.0,
            duplicate: status == ReferralStatus::Duplicate,
        }),
        ReferralEvent::ReferralHired { .. } => Some(Change::ReferralHired),
        ReferralEvent::MilestoneReached { .. } => Some(Change::MilestoneReached),
        _ => None,
    }
}

fn payout_change(payout_event: PayoutEvent) -> Option<Change> {
    let status = match payout_event {
        PayoutEvent::PayoutRequested {
            ambassador_id,
            recipient,
            amount,
            ..
        } => {
            return Some(Change::PayoutRequested {
                ambassador_id: ambassador_id.0,
                recipient: recipient.as_str(),
                amount: amount.amount(),
                currency: amount.currency().as_str().to_owned(),
            })
        }
        PayoutEvent::PayoutApproved { .. } => PayoutStatus::Approved,
        PayoutEvent::PayoutRejected { .. } => PayoutStatus::Rejected,
        PayoutEvent::PayoutVoided { .. } => PayoutStatus::Voided,
        PayoutEvent::PayoutExported { .. } => PayoutStatus::Exported,
        PayoutEvent::PayoutPaid { .. } => PayoutStatus::Paid,
        PayoutEvent::PayoutReversed { .. } => PayoutStatus::Reversed,
        PayoutEvent::PayoutHeld { .. } | PayoutEvent::PayoutReleased { .. } => return None,
    };
    Some(Change::PayoutStatusChanged { status })
}

/// An `ambassador_summaries` row. Counts are `integer` columns, held as `i64` here and
/// checked against the column's range by the database when written.
#[derive(Debug, sqlx::FromRow)]
struct SummaryRow {
    ambassador_id: Uuid,
    agency_id: Uuid,
    kind: String,
    active: bool,
    referrals_submitted: i64,
    referrals_duplicate: i64,
    referrals_hired: i64,
    milestones_reached: i64,
    payouts_pending: i64,
    payouts_approved: i64,
    payouts_paid: i64,
    updated_at: DateTime<Utc>,
}

/// An `ambassador_earnings` row.
#[derive(Debug, sqlx::FromRow)]
struct EarningsRow {
    ambassador_id: Uuid,
    currency: String,
    agency_id: Uuid,
    pending_amount: i64,
    earned_amount: i64,
    paid_amount: i64,
    updated_at: DateTime<Utc>,
}

/// An `ambassador_summary_referrals` row.
#[derive(Debug, sqlx::FromRow)]
struct ReferralLookup {
    referral_id: Uuid,
    ambassador_id: Uuid,
    duplicate: bool,
    hired: bool,
    milestones_reached: i64,
}

/// An `ambassador_summary_payouts` row.
#[derive(Debug, Clone, sqlx::FromRow)]
struct PayoutLookup {
    payout_id: Uuid,
    ambassador_id: Uuid,
    recipient: String,
    amount: i64,
    currency: String,
    status: String,
}

/// The referral figures of one ambassador, as `recount_referrals` computes them from the
/// lookup rows.
#[derive(Debug, Clone, Copy, Default)]
struct ReferralCounts {
    submitted: i64,
    duplicates: i64,
    hired: i64,
    milestones: i64,
}

impl ReferralCounts {
    /// Adds `count` lookup rows with these flags and `milestones` reached in total. A
    /// negative `count` and `milestones` remove them.
    fn add(&mut self, duplicate: bool, hired: bool, count: i64, milestones: i64) {
        self.submitted += count;
        if duplicate {
            self.duplicates += count;
        }
        if hired {
            self.hired += count;
        }
        self.milestones += milestones;
    }

    fn add_lookup(&mut self, lookup: &ReferralLookup, sign: i64) {
        self.add(
            lookup.duplicate,
            lookup.hired,
            sign,
            sign * lookup.milestones_reached,
        );
    }
}

/// The payout figures of one ambassador or of one ambassador and currency, as
/// `recount_payouts` computes them from the lookup rows of the ambassador's own payouts.
#[derive(Debug, Clone, Copy, Default)]
struct PayoutFigures {
    /// Payouts of any status. Earnings are written only when there is at least one.
    payouts: i64,
    pending: i64,
    approved: i64,
    paid: i64,
    pending_amount: i64,
    earned_amount: i64,
    paid_amount: i64,
}

impl PayoutFigures {
    /// Adds `count` payouts in `status` with `amount` in total; negative values remove
    /// them. Rejected, voided and reversed payouts count only in `payouts`.
    fn add(&mut self, status: &str, count: i64, amount: i64) {
        self.payouts += count;
        if status == PayoutStatus::PendingApproval.as_str() {
            self.pending += count;
            self.pending_amount += amount;
        } else if status == PayoutStatus::Approved.as_str()
            || status == PayoutStatus::Exported.as_str()
        {
            self.approved += count;
            self.earned_amount += amount;
        } else if status == PayoutStatus::Paid.as_str() {
            self.paid += count;
            self.earned_amount += amount;
            self.paid_amount += amount;
        }
    }
}

/// The rows a batch touches and the figures they are recounted from, while the batch is
/// folded.
#[derive(Default)]
struct Fold {
    summaries: HashMap<Uuid, SummaryRow>,
    earnings: HashMap<(Uuid, String), EarningsRow>,
    referrals: HashMap<Uuid, ReferralLookup>,
    payouts: HashMap<Uuid, PayoutLookup>,
    referral_counts: HashMap<Uuid, ReferralCounts>,
    /// Figures of the ambassador's own payouts, per ambassador.
    payout_counts: HashMap<Uuid, PayoutFigures>,
    /// Figures of the ambassador's own payouts, per ambassador and currency.
    payout_totals: HashMap<(Uuid, String), PayoutFigures>,
    /// Keys of the rows to write, in key order.
    changed_summaries: BTreeSet<Uuid>,
    changed_earnings: BTreeSet<(Uuid, String)>,
    changed_referrals: BTreeSet<Uuid>,
    changed_payouts: BTreeSet<Uuid>,
}

impl Fold {
    /// Reads the stored rows that `changes` can touch, and the figures of every ambassador
    /// that they can recount or whose lookup rows they can change.
    async fn read(
        connection: &mut PgConnection,
        changes: &[(&StoredEvent, Uuid, Change)],
    ) -> Result<Self, ProjectionError> {
        let mut referral_ids = Vec::new();
        let mut payout_ids = Vec::new();
        // Ambassadors whose summary row, referral figures or payout figures are needed.
        let mut ambassador_ids = Vec::new();
        let mut referral_ambassador_ids = Vec::new();
        let mut payout_ambassador_ids = Vec::new();
        for (_, id, change) in changes {
            match change {
                Change::Enrolled { .. } | Change::KindChanged { .. } | Change::Deactivated => {
                    ambassador_ids.push(*id);
                }
                Change::ReferralSubmitted { ambassador_id, .. } => {
                    referral_ambassador_ids.push(*ambassador_id);
                    referral_ids.push(*id);
                }
                Change::ReferralHired | Change::MilestoneReached => {
                    referral_ids.push(*id);
                }
                Change::PayoutRequested { ambassador_id, .. } => {
                    payout_ambassador_ids.push(*ambassador_id);
                    payout_ids.push(*id);
                }
                Change::PayoutStatusChanged { .. } => {
                    payout_ids.push(*id);
                }
            }
        }

        let referrals = tables::read_referral_lookups(connection, &sorted(referral_ids)).await?;
        let payouts = tables::read_payout_lookups(connection, &sorted(payout_ids)).await?;
        // A lookup row's ambassador loses the row when a repeated submission or request
        // names another one, so the figures of the stored rows' ambassadors are needed too.
        referral_ambassador_ids.extend(referrals.values().map(|row| row.ambassador_id));
        payout_ambassador_ids.extend(payouts.values().map(|row| row.ambassador_id));
        let referral_ambassador_ids = sorted(referral_ambassador_ids);
        let payout_ambassador_ids = sorted(payout_ambassador_ids);
        ambassador_ids.extend_from_slice(&referral_ambassador_ids);
        ambassador_ids.extend_from_slice(&payout_ambassador_ids);

        let summaries = tables::read_summaries(connection, &sorted(ambassador_ids)).await?;
        let referral_counts =
            tables::read_referral_counts(connection, &referral_ambassador_ids).await?;
        let (payout_counts, payout_totals) =
            tables::read_payout_figures(connection, &payout_ambassador_ids).await?;
        let earnings = tables::read_earnings(connection, &payout_ambassador_ids).await?;
        Ok(Self {
            summaries,
            earnings,
            referrals,
            payouts,
            referral_counts,
            payout_counts,
            payout_totals,
            ..Self::default()
        })
    }

    /// Applies one change with the effect of the statements that the event-by-event path
    /// runs for its event.
    fn apply(
        &mut self,
        event: &StoredEvent,
        id: Uuid,
        change: Change,
    ) -> Result<(), ProjectionError> {
        match change {
            Change::Enrolled { agency_id, kind } => {
                let summary = self.summaries.entry(id).or_insert_with(|| SummaryRow {
                    ambassador_id: id,
                    agency_id,
                    kind: String::new(),
                    active: true,
                    referrals_submitted: 0,
                    referrals_duplicate: 0,
                    referrals_hired: 0,
                    milestones_reached: 0,
                    payouts_pending: 0,
                    payouts_approved: 0,
                    payouts_paid: 0,
                    updated_at: event.recorded_at,
                });
                // A repeated enrollment keeps the counts, as the upsert of `apply` does.
                summary.agency_id = agency_id;
                summary.kind = kind.to_owned();
                summary.active = true;
                summary.updated_at = event.recorded_at;
                self.changed_summaries.insert(id);
            }
            Change::KindChanged { kind } => {
                let summary = self.summary_mut(id, event)?;
                summary.kind = kind.to_owned();
                summary.updated_at = event.recorded_at;
            }
            Change::Deactivated => {
                let summary = self.summary_mut(id, event)?;
                summary.active = false;
                summary.updated_at = event.recorded_at;
            }
            Change::ReferralSubmitted {
                ambassador_id,
                duplicate,
            } => {
                self.submit_referral(id, ambassador_id, duplicate);
                self.recount_referrals(ambassador_id, event)?;
            }
            Change::ReferralHired => {
                let ambassador_id =
                    self.update_referral(id, event, |lookup| lookup.hired = true)?;
                self.recount_referrals(ambassador_id, event)?;
            }
            Change::MilestoneReached => {
                let ambassador_id = self.update_referral(id, event, |lookup| {
                    lookup.milestones_reached += 1;
                })?;
                self.recount_referrals(ambassador_id, event)?;
            }
            Change::PayoutRequested {
                ambassador_id,
                recipient,
                amount,
                currency,
            } => {
                let lookup = PayoutLookup {
                    payout_id: id,
                    ambassador_id,
                    recipient: recipient.to_owned(),
                    amount,
                    currency,
                    status: PayoutStatus::PendingApproval.as_str().to_owned(),
                };
                let (ambassador_id, currency) = self.replace_payout(lookup);
                self.recount_payouts(ambassador_id, currency, event)?;
            }
            Change::PayoutStatusChanged { status } => {
                let lookup = self
                    .payouts
                    .get(&id)
                    .ok_or_else(|| missing_lookup(event, "ambassador_summary_payouts"))?;
                let lookup = PayoutLookup {
                    status: status.as_str().to_owned(),
                    ..lookup.clone()
                };
                let (ambassador_id, currency) = self.replace_payout(lookup);
                self.recount_payouts(ambassador_id, currency, event)?;
            }
        }
        Ok(())
    }

    /// Returns the ambassador's summary row, marked as changed.
    ///
    /// # Errors
    /// [`ProjectionError::Poison`] when the ambassador has no summary row.
    fn summary_mut(
        &mut self,
        ambassador_id: Uuid,
        event: &StoredEvent,
    ) -> Result<&mut SummaryRow, ProjectionError> {
        let summary = self
            .summaries
            .get_mut(&ambassador_id)
            .ok_or_else(|| missing_row(event, "ambassador_summaries"))?;
        self.changed_summaries.insert(ambassador_id);
        Ok(summary)
    }

    /// Creates or replaces the referral's lookup row. A repeated submission replaces the
    /// ambassador and the duplicate flag and keeps the hire and the milestones.
    fn submit_referral(&mut self, referral_id: Uuid, ambassador_id: Uuid, duplicate: bool) {
        let lookup = match self.referrals.entry(referral_id) {
            Entry::Occupied(entry) => {
                let lookup = entry.into_mut();
                self.referral_counts
                    .entry(lookup.ambassador_id)
                    .or_default()
                    .add_lookup(lookup, -1);
                lookup.ambassador_id = ambassador_id;
                lookup.duplicate = duplicate;
                lookup
            }
            Entry::Vacant(entry) => entry.insert(ReferralLookup {
                referral_id,
                ambassador_id,
                duplicate,
                hired: false,
                milestones_reached: 0,
            }),
        };
        self.referral_counts
            .entry(ambassador_id)
            .or_default()
            .add_lookup(lookup, 1);
        self.changed_referrals.insert(referral_id);
    }

    /// Changes the referral's lookup row with `update` and returns its ambassador.
    ///
    /// # Errors
    /// [`ProjectionError::Poison`] when the referral has no lookup row.
    fn update_referral(
        &mut self,
        referral_id: Uuid,
        event: &StoredEvent,
        update: impl FnOnce(&mut ReferralLookup),
    ) -> Result<Uuid, ProjectionError> {
        let lookup = self
            .referrals
            .get_mut(&referral_id)
            .ok_or_else(|| missing_lookup(event, "ambassador_summary_referrals"))?;
        let counts = self
            .referral_counts
            .entry(lookup.ambassador_id)
            .or_default();
        counts.add_lookup(lookup, -1);
        update(lookup);
        counts.add_lookup(lookup, 1);
        self.changed_referrals.insert(referral_id);
        Ok(lookup.ambassador_id)
    }

    /// Stores `lookup` in place of the payout's lookup row, moves the payout from the
    /// figures of the row it replaces to those of `lookup`, and returns its ambassador and
    /// currency.
    fn replace_payout(&mut self, lookup: PayoutLookup) -> (Uuid, String) {
        if let Some(previous) = self.payouts.remove(&lookup.payout_id) {
            self.count_payout(&previous, -1);
        }
        self.count_payout(&lookup, 1);
        let key = (lookup.ambassador_id, lookup.currency.clone());
        self.changed_payouts.insert(lookup.payout_id);
        self.payouts.insert(lookup.payout_id, lookup);
        key
    }

    /// Adds a payout lookup row to the figures of its ambassador (`sign` 1) or removes it
    /// (`sign` -1). A candidate's payout is in no figures.
    fn count_payout(&mut self, lookup: &PayoutLookup, sign: i64) {
        if lookup.recipient != Recipient::Ambassador.as_str() {
            return;
        }
        let amount = sign * lookup.amount;
        self.payout_counts
            .entry(lookup.ambassador_id)
            .or_default()
            .add(&lookup.status, sign, amount);
        self.payout_totals
            .entry((lookup.ambassador_id, lookup.currency.clone()))
            .or_default()
            .add(&lookup.status, sign, amount);
    }

    /// Copies the ambassador's referral figures into the summary row, as
    /// `recount_referrals` does.
    fn recount_referrals(
        &mut self,
        ambassador_id: Uuid,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let counts = self
            .referral_counts
            .get(&ambassador_id)
            .copied()
            .unwrap_or_default();
        let summary = self.summary_mut(ambassador_id, event)?;
        summary.referrals_submitted = counts.submitted;
        summary.referrals_duplicate = counts.duplicates;
        summary.referrals_hired = counts.hired;
        summary.milestones_reached = counts.milestones;
        summary.updated_at = event.recorded_at;
        Ok(())
    }

    /// Copies the ambassador's payout figures into the summary row and, while the
    /// ambassador has own payouts in `currency`, into the earnings row, as
    /// `recount_payouts` does.
    fn recount_payouts(
        &mut self,
        ambassador_id: Uuid,
        currency: String,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let counts = self
            .payout_counts
            .get(&ambassador_id)
            .copied()
            .unwrap_or_default();
        let summary = self.summary_mut(ambassador_id, event)?;
        summary.payouts_pending = counts.pending;
        summary.payouts_approved = counts.approved;
        summary.payouts_paid = counts.paid;
        summary.updated_at = event.recorded_at;

        let key = (ambassador_id, currency);
        let totals = self.payout_totals.get(&key).copied().unwrap_or_default();
        if totals.payouts == 0 {
            return Ok(());
        }
        // The agency is written only with a new row, as in `recount_payouts`.
        let earnings = self
            .earnings
            .entry(key.clone())
            .or_insert_with(|| EarningsRow {
                ambassador_id,
                currency: key.1.clone(),
                agency_id: event.agency_id,
                pending_amount: 0,
                earned_amount: 0,
                paid_amount: 0,
                updated_at: event.recorded_at,
            });
        earnings.pending_amount = totals.pending_amount;
        earnings.earned_amount = totals.earned_amount;
        earnings.paid_amount = totals.paid_amount;
        earnings.updated_at = event.recorded_at;
        self.changed_earnings.insert(key);
        Ok(())
    }

    /// Upserts every changed row, one statement per table.
    async fn write(&self, connection: &mut PgConnection) -> Result<(), ProjectionError> {
        let referrals: Vec<&ReferralLookup> = self
            .changed_referrals
            .iter()
            .map(|id| &self.referrals[id])
            .collect();
        tables::write_referral_lookups(connection, &referrals).await?;
        let payouts: Vec<&PayoutLookup> = self
            .changed_payouts
            .iter()
            .map(|id| &self.payouts[id])
            .collect();
        tables::write_payout_lookups(connection, &payouts).await?;
        let summaries: Vec<&SummaryRow> = self
            .changed_summaries
            .iter()
            .map(|id| &self.summaries[id])
            .collect();
        tables::write_summaries(connection, &summaries).await?;
        let earnings: Vec<&EarningsRow> = self
            .changed_earnings
            .iter()
            .map(|key| &self.earnings[key])
            .collect();
        tables::write_earnings(connection, &earnings).await
    }
}

/// Returns `ids` sorted and without repeats.
fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort_unstable();
    ids.dedup();
    ids
}
