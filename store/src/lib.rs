//! Infrastructure shared by the API, the projections and the jobs: the PostgreSQL event
//! store around postgres-es, field encryption and keyed hashes, and the reservations that
//! enforce rules spanning several aggregates.

pub mod accounts;
pub mod application;
pub mod audit;
pub mod crypto;
pub mod database;
pub mod event_store;
pub mod keys;
pub mod offboarding;
pub mod personal;
pub mod privacy;
pub mod replica;
pub mod reservations;
mod tenancy;
pub mod upcast;
