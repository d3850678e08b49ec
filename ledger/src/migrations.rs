//! Versioned schemas: each store keeps a `(version, name, SQL)` list, applied in order and
//! never edited once released (a change is a new step), and records what it applied in a
//! `schema_migrations` table. The two stores run their steps their own way (SQLite in one
//! transaction, PostgreSQL one transaction per step under an advisory lock); which steps to
//! run, and refusing a database that a newer yolo-edge migrated, is decided here for both.
//!
//! (A migration crate such as refinery would keep its own history table: the PostgreSQL
//! ledgers already deployed record theirs in `schema_migrations`, so the steps stay ours.)

/// One step: its version (1, 2, ...), a name, and its SQL.
pub type Migration = (i32, &'static str, &'static str);

/// The steps of `migrations` not in `done` (the versions a database records), in order; an
/// error when the database is at a version newer than any of `migrations`.
pub(crate) fn pending<'a>(migrations: &'a [Migration], done: &[i32]) -> anyhow::Result<Vec<&'a Migration>> {
    let known = migrations.last().map_or(0, |m| m.0);
    if let Some(newer) = done.iter().copied().filter(|v| *v > known).max() {
        anyhow::bail!(
            "the database is at schema version {newer}, newer than this yolo-edge knows ({known}): upgrade yolo-edge"
        );
    }
    Ok(migrations.iter().filter(|m| !done.contains(&m.0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] = &[(1, "a", "SELECT 1"), (2, "b", "SELECT 2")];

    #[test]
    fn only_missing_steps_run_and_newer_databases_are_refused() {
        assert_eq!(pending(STEPS, &[]).unwrap().len(), 2);
        assert_eq!(pending(STEPS, &[1]).unwrap()[0].0, 2);
        assert!(pending(STEPS, &[1, 2]).unwrap().is_empty());
        let e = pending(STEPS, &[1, 2, 3]).unwrap_err().to_string();
        assert!(e.contains("schema version 3, newer than this yolo-edge knows (2)"), "{e}");
    }
}
