//! The keyspace and its tables: what `tripline schema apply` creates or migrates.

use super::*;

/// The configured keyspace name, refused unless it is a plain CQL identifier (it is spliced
/// into statements).
pub(super) fn checked_keyspace(config: &ScyllaConfig) -> StoreResult<&str> {
    let ks = config.keyspace.as_str();
    if !is_identifier(ks) {
        return Err(StoreError::Refused { detail: format!("keyspace name {ks:?} is not a CQL identifier") });
    }
    Ok(ks)
}

/// The keyspace and tables, with placeholders (`schema.cql`).
const SCHEMA_CQL: &str = include_str!("schema.cql");

/// Columns added since a table was first created: schema 2 gave trips the binary `data`,
/// schema 4 gave feed entries their time and notices (and added the webhook tables).
const ADDED_COLUMNS: [(&str, &str, &str); 3] =
    [("trips", "data", "blob"), ("feed", "at", "bigint"), ("feed", "push", "blob")];

/// `schema.cql`'s statements for keyspace `ks` replicated `replication_factor` times in
/// `datacenter`, comments left out.
fn schema_statements(ks: &str, datacenter: &str, replication_factor: u32) -> Vec<String> {
    let text: String =
        SCHEMA_CQL.lines().filter(|line| !line.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    text.split(';')
        .map(|statement| statement.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|statement| !statement.is_empty())
        .map(|statement| {
            statement
                .replace("{ks}", ks)
                .replace("{datacenter}", datacenter)
                .replace("{replication_factor}", &replication_factor.to_string())
        })
        .collect()
}

/// Creates the keyspace and tables, and adds missing columns (idempotent). The version is
/// recorded apart ([`record_version`]), once the data is migrated too.
pub(super) async fn apply_schema(session: &Session, config: &ScyllaConfig) -> StoreResult<()> {
    let ks = checked_keyspace(config)?;
    let retry = config.retry_policy();
    let datacenter = datacenter(session, config, &retry).await?;
    for cql in schema_statements(ks, &datacenter, config.replication_factor) {
        run_cql(session, &retry, "schema", &cql).await?;
    }
    for (table, column, kind) in ADDED_COLUMNS {
        add_column_if_missing(session, &retry, ks, table, column, kind).await?;
    }
    retry
        .run("schema agreement", || async {
            session.await_schema_agreement().await.map(|_| ()).map_err(|e| Attempt::Transient(e.to_string()))
        })
        .await?;
    Ok(())
}

/// The schema version recorded in keyspace `ks`; `None` for a keyspace just created.
pub(super) async fn recorded_version(session: &Session, retry: &RetryPolicy, ks: &str) -> StoreResult<Option<i32>> {
    let cql = format!("SELECT version FROM {ks}.schema_version WHERE id = 0");
    let result = run_cql(session, retry, "schema version", &cql).await?;
    let rows = result.into_rows_result().map_err(|e| corrupt("schema_version", e))?;
    let version = rows.maybe_first_row::<(Option<i32>,)>().map_err(|e| corrupt("schema_version", e))?;
    Ok(version.and_then(|(v,)| v))
}

/// Records [`SCHEMA_VERSION`] in keyspace `ks`.
pub(super) async fn record_version(session: &Session, retry: &RetryPolicy, ks: &str) -> StoreResult<()> {
    let cql =
        format!("INSERT INTO {ks}.schema_version (id, version, applied_at) VALUES (0, {SCHEMA_VERSION}, {})", now_ms());
    run_cql(session, retry, "schema version", &cql).await?;
    Ok(())
}

/// The data center to replicate in: the configured one, else the contact node's.
async fn datacenter(session: &Session, config: &ScyllaConfig, retry: &RetryPolicy) -> StoreResult<String> {
    let datacenter = match &config.datacenter {
        Some(dc) => dc.clone(),
        None => {
            let result = run_cql(session, retry, "read data center", "SELECT data_center FROM system.local").await?;
            let rows = result.into_rows_result().map_err(|e| corrupt("system.local", e))?;
            let (dc,): (String,) = rows.first_row().map_err(|e| corrupt("system.local", e))?;
            dc
        }
    };
    if datacenter.contains('\'') {
        return Err(StoreError::Refused { detail: format!("data center name {datacenter:?}") });
    }
    Ok(datacenter)
}

/// Adds `table.column` of type `kind` unless the table has it (a keyspace created before it).
async fn add_column_if_missing(
    session: &Session,
    retry: &RetryPolicy,
    ks: &str,
    table: &str,
    column: &str,
    kind: &str,
) -> StoreResult<()> {
    let present = retry
        .run("schema columns", || async {
            let result = session
                .query_unpaged(
                    "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? \
                     AND column_name = ?",
                    (ks, table, column),
                )
                .await
                .map_err(|e| classify(&e))?;
            Ok(result.into_rows_result().map_err(|e| Attempt::Permanent(e.to_string()))?.rows_num() > 0)
        })
        .await?;
    if !present {
        run_cql(session, retry, "schema", &format!("ALTER TABLE {ks}.{table} ADD {column} {kind}")).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_file_gives_the_keyspace_then_every_table_filled_in() {
        let statements = schema_statements("fleet", "dc1", 3);
        assert_eq!(statements.len(), 17, "{statements:#?}");
        assert_eq!(
            statements[0],
            "CREATE KEYSPACE IF NOT EXISTS fleet WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3}"
        );
        for statement in &statements[1..] {
            assert!(statement.starts_with("CREATE TABLE IF NOT EXISTS fleet."), "{statement}");
            assert!(!statement.contains('{') || statement.contains("'class'"), "a placeholder left: {statement}");
            assert!(!statement.contains("--"), "a comment left: {statement}");
        }
        for (table, column, _) in ADDED_COLUMNS {
            let created = statements.iter().find(|s| s.contains(&format!("fleet.{table} ("))).expect(table);
            assert!(created.contains(&format!(" {column} ")), "{table} is created with {column}");
        }
    }
}
