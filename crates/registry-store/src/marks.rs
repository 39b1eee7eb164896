//! Service marks: named facts about the service kept with its data (table
//! `service_marks`), such as the authentication mode that last served it.

use registry_core::Timestamp;
use registry_core::ports::store::StoreError;
use sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use sea_orm::{ConnectionTrait, StatementBuilder};

use crate::SeaStore;
use crate::failure::Failure;

fn store_error(error: sea_orm::DbErr) -> StoreError {
    Failure::Db(error).into()
}

/// The mark naming the authentication mode of the last production start.
pub const AUTH_MODE: &str = "auth_mode";

impl SeaStore {
    /// The value of mark `name`, if set.
    pub async fn mark(&self, name: &str) -> Result<Option<String>, StoreError> {
        let query = Query::select()
            .column(Alias::new("value"))
            .from(Alias::new("service_marks"))
            .and_where(Expr::col(Alias::new("name")).eq(name))
            .to_owned();
        let row = self
            .reader
            .query_one(StatementBuilder::build(&query, &self.reader.get_database_backend()))
            .await
            .map_err(store_error)?;
        row.map(|row| row.try_get::<String>("", "value"))
            .transpose()
            .map_err(store_error)
    }

    /// Sets mark `name` to `value`.
    pub async fn set_mark(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let insert = Query::insert()
            .into_table(Alias::new("service_marks"))
            .columns([Alias::new("name"), Alias::new("value"), Alias::new("updated_at")])
            .values_panic([name.into(), value.into(), Timestamp::now().0.into()])
            .on_conflict(
                OnConflict::column(Alias::new("name"))
                    .update_columns([Alias::new("value"), Alias::new("updated_at")])
                    .to_owned(),
            )
            .to_owned();
        self.writer
            .execute(StatementBuilder::build(&insert, &self.writer.get_database_backend()))
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
