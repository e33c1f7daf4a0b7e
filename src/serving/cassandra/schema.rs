//! The serving keyspace and its tables: versioned CQL files applied once, in order.
//!
//! `cql/VNNN__name.cql` files are compiled into the binary. Each applied version is recorded in
//! `<keyspace>.schema_migrations` with a checksum; a released file that changed afterwards is an
//! error rather than a silent drift. Statements use `IF NOT EXISTS`, so a migration interrupted
//! half-way is simply applied again.

use scylla::value::{CqlTimestamp, CqlValue};

use super::Cassandra;
use crate::{Error, Result};

/// A versioned CQL file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version number, in application order.
    pub version: i32,
    /// Name (from the file name).
    pub name: &'static str,
    /// CQL statements separated by `;`, `--` comments allowed.
    pub cql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "serving_tables", cql: include_str!("cql/V001__serving_tables.cql") }];

impl Migration {
    /// The statements of the file, comments removed.
    pub fn statements(&self) -> Vec<String> {
        let text: String = self
            .cql
            .lines()
            .map(|l| l.split_once("--").map_or(l, |(code, _)| code))
            .collect::<Vec<_>>()
            .join("\n");
        text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    /// A stable checksum of the file's text.
    pub fn checksum(&self) -> String {
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(self.cql.as_bytes()))
    }
}

/// Creates the keyspace when absent and applies the migrations not yet recorded.
/// Returns the versions applied by this call.
pub async fn apply(c: &Cassandra) -> Result<Vec<i32>> {
    let ks = c.keyspace();
    let cfg = c.config();
    let replication = match &cfg.local_datacenter {
        Some(dc) => format!("{{'class': 'NetworkTopologyStrategy', '{dc}': {}}}", cfg.replication_factor),
        None => format!("{{'class': 'SimpleStrategy', 'replication_factor': {}}}", cfg.replication_factor),
    };
    ddl(c, &format!("CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}")).await?;
    ddl(
        c,
        &format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations \
             (version int PRIMARY KEY, name text, checksum text, applied_at timestamp)"
        ),
    )
    .await?;
    let applied: Vec<(i32, String)> = c
        .rows(
            "reading schema_migrations",
            &format!("SELECT version, checksum FROM {ks}.schema_migrations"),
            &(),
        )
        .await?
        .into_iter()
        .filter_map(|r| match r.columns.as_slice() {
            [Some(CqlValue::Int(v)), Some(CqlValue::Text(sum))] => Some((*v, sum.clone())),
            _ => None,
        })
        .collect();
    let mut done = Vec::new();
    for m in MIGRATIONS {
        match applied.iter().find(|(v, _)| *v == m.version) {
            Some((_, sum)) if *sum != m.checksum() => {
                return Err(Error::Cassandra(format!(
                    "schema migration V{:03}__{} changed after it was applied to keyspace {ks}; add a new migration instead",
                    m.version, m.name
                )));
            }
            Some(_) => continue,
            None => {}
        }
        for stmt in m.statements() {
            let qualified = qualify(&stmt, ks);
            ddl(c, &qualified).await?;
        }
        let now = CqlTimestamp(chrono::Utc::now().timestamp_millis());
        let insert = format!(
            "INSERT INTO {ks}.schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)"
        );
        c.retry("recording a schema migration", || async {
            Ok(c.session().query_unpaged(insert.as_str(), (m.version, m.name, m.checksum(), now)).await?)
        })
        .await?;
        tracing::info!("applied CQL migration V{:03}__{} to keyspace {ks}", m.version, m.name);
        done.push(m.version);
    }
    Ok(done)
}

async fn ddl(c: &Cassandra, cql: &str) -> Result<()> {
    c.retry("applying the serving schema", || async { Ok(c.session().query_unpaged(cql, ()).await?) })
        .await?;
    Ok(())
}

/// Prefixes the table of `CREATE TABLE IF NOT EXISTS name` with the keyspace.
fn qualify(stmt: &str, ks: &str) -> String {
    const CREATE: &str = "CREATE TABLE IF NOT EXISTS ";
    match stmt.strip_prefix(CREATE) {
        Some(rest) => format!("{CREATE}{ks}.{}", rest.trim_start()),
        None => stmt.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_split_into_statements() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        let stmts = MIGRATIONS[0].statements();
        assert!(stmts.iter().all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS ")), "{stmts:?}");
        assert!(stmts.iter().all(|s| !s.contains("--") && !s.contains("ALLOW FILTERING")));
        assert_eq!(stmts.len(), 10);
        assert_eq!(qualify(&stmts[0], "ks"), stmts[0].replacen("EXISTS ", "EXISTS ks.", 1));
    }
}
