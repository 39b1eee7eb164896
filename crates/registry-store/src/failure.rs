//! Database failures, mapped to the port's [`StoreError`] once per store
//! method: the bodies use `?` on [`Failure`], the methods convert.

use registry_core::ports::store::StoreError;
use sea_orm::{DbErr, SqlErr};

/// Why a store operation failed, before it reaches the port.
#[derive(Debug)]
pub(crate) enum Failure {
    Db(DbErr),
    Corrupt(String),
}

impl From<DbErr> for Failure {
    fn from(error: DbErr) -> Self {
        Self::Db(error)
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Db(error) => StoreError::Unavailable(error.to_string()),
            Failure::Corrupt(what) => StoreError::Corrupt(what),
        }
    }
}

pub(crate) type Result<T, E = Failure> = std::result::Result<T, E>;

pub(crate) fn is_unique_violation(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// A failure as text, for errors outside the port (opening the store).
pub(crate) fn describe(failure: Failure) -> String {
    StoreError::from(failure).to_string()
}
