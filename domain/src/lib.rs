//! Domain model of the referral programs: aggregates, their commands and events,
//! validated value types, program terms, domain errors and the service traits that
//! the store crate implements.
//!
//! Nothing here performs I/O. Every command carries the time at which it happens, so
//! the same events and the same command always produce the same result.
//!
//! Personal fields (names, e-mail addresses, phone numbers, notes) enter the aggregates
//! only as [`values::Sealed`] ciphertext produced by the store's encryption layer, so
//! events and snapshots never hold them in plaintext. Duplicate detection compares
//! [`values::KeyedHash`] values instead.

pub mod agency;
pub mod ambassador;
pub mod error;
pub mod ids;
pub mod payout;
pub mod privacy;
pub mod program;
pub mod referral;
pub mod role;
pub mod services;
pub mod terms;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod user;
pub mod values;

pub use error::{DomainError, ErrorKind};
