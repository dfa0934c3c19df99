//! The one Postgres pool every part of CloudRouter shares, and the schema migrations.

use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

/// The pool size that suits one instance: the gateway keeps its hot path off the database, so
/// a modest pool serves many requests.
pub const DEFAULT_POOL_SIZE: u32 = 20;

/// Connects with at most `max_connections` connections (`CLOUDROUTER_DB_POOL_SIZE`).
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await
}

/// Applies the migrations in `migrations/` (embedded at build time). Safe to run from several
/// server instances at once: sqlx takes an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../../migrations").run(pool).await
}

#[cfg(test)]
mod tests {
    /// Every function that more than one migration defines is listed in docs/sql-functions.md
    /// with the migration that holds its current definition.
    #[test]
    fn redefined_sql_functions_name_their_current_definition_in_the_docs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files: Vec<_> = std::fs::read_dir(root.join("migrations")).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let mut defined: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for file in &files {
            let sql = std::fs::read_to_string(file).unwrap().to_lowercase();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            for (at, _) in sql.match_indices("function ") {
                let before = sql[..at].trim_end();
                if !(before.ends_with("create") || before.ends_with("or replace")) {
                    continue;
                }
                let f: String = sql[at + "function ".len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let seen = defined.entry(f).or_default();
                if seen.last() != Some(&name) {
                    seen.push(name.clone());
                }
            }
        }
        let doc = std::fs::read_to_string(root.join("docs/sql-functions.md")).unwrap();
        let redefined: Vec<_> = defined.iter().filter(|(_, files)| files.len() > 1).collect();
        assert!(redefined.iter().any(|(f, _)| *f == "cr_settle"), "the scan finds cr_settle: {defined:?}");
        for (f, files) in redefined {
            let row = doc.lines().find(|l| l.starts_with(&format!("| `{f}`"))).unwrap_or_else(|| panic!("{f} is redefined ({files:?}) but not in docs/sql-functions.md"));
            let current = files.last().unwrap();
            assert!(row.contains(&format!("`{current}`")), "{f}: its current definition is in {current}: {row}");
        }
    }
}
