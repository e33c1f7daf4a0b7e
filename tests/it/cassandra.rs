//! Serving on a real Cassandra node: publish, the five queries against the lake, idempotence,
//! deletes, and faults (node down at start, node killed mid-publish).
//!
//! The shared node comes from `CLOUDLAKE_TEST_CASSANDRA` (`scripts/test-all.sh` starts one with
//! `scripts/cassandra.sh`); each test uses its own keyspace. The fault test starts and kills a
//! node of its own. Without a reachable node these tests fail; they never skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudlake::lake::{Lake, Layer};
use cloudlake::serving::cassandra::publish::{PublishReport, publish};
use cloudlake::serving::cassandra::{Cassandra, CassandraConfig};
use cloudlake::serving::queries::parse_date;
use cloudlake::serving::{QueryName, QueryParams};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use tokio::sync::OnceCell;

use crate::{copy_dir, real_landing, sql};

/// `host:port` of the shared test node.
pub(crate) fn shared_node() -> String {
    std::env::var("CLOUDLAKE_TEST_CASSANDRA").unwrap_or_else(|_| {
        panic!(
            "CLOUDLAKE_TEST_CASSANDRA is not set. These tests need a real Cassandra node: \
             run `scripts/cassandra.sh start` and export CLOUDLAKE_TEST_CASSANDRA=127.0.0.1:9042 \
             (scripts/test-all.sh does both)"
        )
    })
}

/// A config for `node` and a keyspace of the test's own.
pub(crate) fn config(node: &str, test: &str) -> CassandraConfig {
    CassandraConfig {
        contact_points: vec![node.to_string()],
        keyspace: format!("t_{test}_{}", std::process::id()),
        retry_seconds: 20,
        ..Default::default()
    }
}

/// The bundled data through bronze, silver and gold, built once per test binary.
pub(crate) async fn real_lake() -> &'static Path {
    static LAKE: OnceCell<PathBuf> = OnceCell::const_new();
    LAKE.get_or_init(|| async {
        let dir = tempfile::tempdir().unwrap().keep();
        crate::run(&real_landing(), &dir).await.unwrap();
        dir
    })
    .await
}

/// Every query answered by both backends, compared batch for batch (types included).
async fn assert_queries_match(lake: &Path, c: &Cassandra, orgs: &[String]) -> usize {
    let lake = Lake::new(lake).unwrap();
    let d = |s: &str| parse_date(s).ok();
    let mut cases: Vec<(QueryName, QueryParams)> = Vec::new();
    for org in orgs {
        let o = Some(org.clone());
        cases.extend([
            (QueryName::DailyUsage, QueryParams { org: o.clone(), ..Default::default() }),
            (
                QueryName::DailyUsage,
                QueryParams {
                    org: o.clone(),
                    from: d("2025-07-20"),
                    to: d("2025-08-10"),
                    ..Default::default()
                },
            ),
            (
                QueryName::DailyUsage,
                QueryParams { org: o.clone(), service: Some("compute".into()), ..Default::default() },
            ),
            (QueryName::TopServices, QueryParams { org: o.clone(), ..Default::default() }),
            (
                QueryName::TopServices,
                QueryParams { org: o.clone(), top: Some(2), to: d("2025-08-02"), ..Default::default() },
            ),
            (QueryName::CriticalTickets, QueryParams { org: o.clone(), ..Default::default() }),
            (QueryName::Revenue, QueryParams { org: o.clone(), ..Default::default() }),
            (QueryName::GenaiTokens, QueryParams { org: o.clone(), ..Default::default() }),
            (QueryName::Anomalies, QueryParams { org: o.clone(), ..Default::default() }),
            (
                QueryName::Anomalies,
                QueryParams { org: o.clone(), from: d("2025-08-01"), ..Default::default() },
            ),
        ]);
    }
    cases.extend([
        (QueryName::CriticalTickets, QueryParams::default()),
        (QueryName::CriticalTickets, QueryParams { to: d("2025-07-15"), ..Default::default() }),
        (QueryName::Revenue, QueryParams::default()),
        (
            QueryName::Revenue,
            QueryParams { from: d("2025-07-15"), to: d("2025-08-31"), ..Default::default() },
        ),
        (QueryName::GenaiTokens, QueryParams::default()),
        (
            QueryName::GenaiTokens,
            QueryParams { from: d("2025-08-01"), to: d("2099-01-01"), ..Default::default() },
        ),
    ]);
    let mut rows = 0;
    for (name, params) in &cases {
        let from_lake = one(cloudlake::serving::lake::query(&lake, *name, params).await.unwrap(), *name);
        let from_cassandra =
            one(cloudlake::serving::cassandra::query::query(c, *name, params).await.unwrap(), *name);
        assert_eq!(from_cassandra, from_lake, "{} {params:?}", name.as_str());
        rows += from_lake.num_rows();
    }
    rows
}

fn one(batches: Vec<RecordBatch>, name: QueryName) -> RecordBatch {
    concat_batches(&cloudlake::serving::queries::output_schema(name), &batches).unwrap()
}

/// A spread of org ids: the busiest and every eighth.
async fn some_orgs(lake: &Path) -> Vec<String> {
    let csv =
        crate::sql_csv(lake, "SELECT org_id FROM gold_org_health ORDER BY cost_last_30d_usd DESC, org_id")
            .await;
    csv.lines().skip(1).step_by(8).map(str::to_string).collect()
}

fn rows_of(report: &PublishReport, table: &str) -> (u64, u64, u64, u64) {
    let t = report.tables.iter().find(|t| t.table == table).unwrap();
    (t.rows, t.written, t.deleted, t.deleted_partitions)
}

/// How many rows `table` holds in Cassandra (a full count: fine for a test).
async fn count(c: &Cassandra, table: &str) -> i64 {
    let rows = c.rows("count", &format!("SELECT count(*) FROM {}.{table}", c.keyspace()), &()).await.unwrap();
    match &rows[0].columns[0] {
        Some(scylla::value::CqlValue::BigInt(n)) => *n,
        other => panic!("count returned {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_marts_answer_all_five_queries_exactly_like_the_lake() {
    let lake = real_lake().await;
    let c = Cassandra::connect(&config(&shared_node(), "parity")).await.unwrap();
    let first = publish(&Lake::new(lake).unwrap(), &c).await.unwrap();
    assert_eq!(rows_of(&first, "org_daily_usage_by_service"), (11_050, 11_050, 0, 0));
    assert_eq!(rows_of(&first, "cost_anomaly_mart").0, 11_050);
    assert_eq!(rows_of(&first, "genai_tokens_by_org_date").0, 1_131);
    assert_eq!(rows_of(&first, "revenue_by_org_month").0, 240);
    assert_eq!(rows_of(&first, "tickets_by_org_date").0, 984);
    assert_eq!(rows_of(&first, "org_health").0, 80);
    assert_eq!(count(&c, "org_daily_usage_by_service").await, 11_050);

    let orgs = some_orgs(lake).await;
    assert_eq!(orgs.len(), 10);
    let rows = assert_queries_match(lake, &c, &orgs).await;
    assert!(rows > 1_000, "the comparison covered {rows} rows");

    // Publishing again writes nothing and deletes nothing: the tables are unchanged.
    let again = publish(&Lake::new(lake).unwrap(), &c).await.unwrap();
    assert_eq!(again.rows(), first.rows());
    assert_eq!((again.written(), again.deleted()), (0, 0));
    assert_eq!(count(&c, "org_daily_usage_by_service").await, 11_050);

    // Bad parameters are refused before any read, as on the lake.
    let unknown = QueryParams { org: Some("org_nope".into()), ..Default::default() };
    let err =
        cloudlake::serving::cassandra::query::query(&c, QueryName::Revenue, &unknown).await.unwrap_err();
    assert_eq!(err.to_string(), "unknown org \"org_nope\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_changed_or_deleted_upstream_are_updated_or_deleted_in_cassandra() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(real_lake().await, dir.path());
    let lake = Lake::new(dir.path()).unwrap();
    let c = Cassandra::connect(&config(&shared_node(), "deletes")).await.unwrap();
    publish(&lake, &c).await.unwrap();

    // Upstream: org A disappears from the daily mart, one row of org B goes, one row changes.
    let orgs = some_orgs(dir.path()).await;
    let (a, b) = (&orgs[1], &orgs[2]);
    let before = sql(dir.path(), "SELECT * FROM gold_org_daily_usage_by_service").await;
    let schema = before[0].schema();
    let edited = sql(
        dir.path(),
        &format!(
            "SELECT org_id, usage_date, service, org_name, industry, plan_tier,
                    CASE WHEN org_id = '{b}' AND usage_date = DATE '2025-08-01' AND service = 'storage'
                         THEN CAST(cost_usd + 1 AS DECIMAL(18, 6)) ELSE cost_usd END AS cost_usd,
                    requests, cpu_hours, storage_gb_hours, genai_tokens, carbon_kg, events, anomalous_events
             FROM gold_org_daily_usage_by_service
             WHERE org_id <> '{a}' AND NOT (org_id = '{b}' AND usage_date = DATE '2025-08-02' AND service = 'compute')"
        ),
    )
    .await;
    let edited: Vec<RecordBatch> = edited
        .into_iter()
        .map(|batch| {
            let columns = batch
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(col, f)| datafusion::arrow::compute::cast(col, f.data_type()).unwrap())
                .collect();
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        })
        .collect();
    let kept: usize = edited.iter().map(|b| b.num_rows()).sum();
    lake.overwrite(Layer::Gold, "org_daily_usage_by_service", edited, schema.clone(), &[]).await.unwrap();
    let a_rows = crate::sql_i64(
        dir.path(),
        &format!("SELECT count(*) FROM gold_org_daily_usage_by_service WHERE org_id = '{a}'"),
    )
    .await;
    assert_eq!(a_rows, 0);

    let report = publish(&lake, &c).await.unwrap();
    let (rows, written, deleted, deleted_partitions) = rows_of(&report, "org_daily_usage_by_service");
    assert_eq!(rows as usize, kept);
    assert_eq!(written, 1, "only the changed row is written");
    assert_eq!(deleted, 1, "the row removed inside a kept partition");
    assert!(deleted_partitions >= 2, "org {a}'s month partitions: {deleted_partitions}");
    assert_eq!(count(&c, "org_daily_usage_by_service").await as usize, kept);
    // Every query still matches the lake, including for the org whose rows are gone.
    assert_queries_match(dir.path(), &c, &[a.clone(), b.clone()]).await;
    let gone = QueryParams { org: Some(a.clone()), ..Default::default() };
    let answer = cloudlake::serving::cassandra::query::query(&c, QueryName::DailyUsage, &gone).await.unwrap();
    assert_eq!(answer.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}

/// A node of the test's own, on free ports, driven by `scripts/cassandra.sh`.
struct Node {
    dir: tempfile::TempDir,
    port: u16,
}

impl Node {
    fn new() -> Node {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Node { dir: tempfile::tempdir().unwrap(), port: free() }
    }

    fn script(&self, action: &str) {
        let storage = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cassandra.sh"))
            .args([action, self.dir.path().to_str().unwrap()])
            .env("CASSANDRA_PORT", self.port.to_string())
            .env("CASSANDRA_STORAGE_PORT", storage.to_string())
            .env("CASSANDRA_HEAP", "512M")
            .status()
            .unwrap();
        assert!(status.success(), "scripts/cassandra.sh {action} failed");
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.script("kill");
    }
}

fn cloudlake(lake: &Path, config_file: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudlake"));
    cmd.args(args)
        .arg("--lake")
        .arg(lake)
        .arg("--config")
        .arg(config_file)
        .env_remove("CLOUDLAKE_CASSANDRA")
        .env("CLOUDLAKE_LOG", "warn,cloudlake=info");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_survives_a_node_that_is_down_or_killed_mid_publish() {
    let lake = real_lake().await;
    let node = Node::new();
    let dir = tempfile::tempdir().unwrap();
    let write_config = |name: &str, retry: u64| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[cassandra]\ncontact_points = [\"{}\"]\nkeyspace = \"faults\"\nretry_seconds = {retry}\n",
                node.address()
            ),
        )
        .unwrap();
        path
    };
    let quick = write_config("quick.toml", 2);
    let patient = write_config("patient.toml", 90);

    // 1. Node down: a clear sentence, after retrying for the configured bound only.
    let started = Instant::now();
    let out = cloudlake(lake, &quick, &["publish"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot connect to") && stderr.contains(&node.address()), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "gave up after {:?}", started.elapsed());

    // 2. Node killed in the middle of a publish (right after the first table): the publish
    //    stops with a clear message once its retries run out.
    node.script("start");
    let mut publishing = cloudlake(lake, &quick, &["publish"]).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = publishing.stderr.take().unwrap();
    let (first_table_done, wait_for_it) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("published org_daily_usage_by_service") {
                let _ = first_table_done.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    wait_for_it.recv_timeout(Duration::from_secs(120)).expect("the first table was never published");
    node.script("kill");
    let status = publishing.wait().unwrap();
    let rest = reader.join().unwrap();
    assert_eq!(status.code(), Some(2), "the publish should fail once the node is gone: {rest}");
    assert!(rest.contains("cloudlake: Cassandra: ") && rest.contains("failed after"), "{rest}");

    // 3. A publish started while the node is still down waits for it (retries) and completes.
    let retrying = cloudlake(lake, &patient, &["publish", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    node.script("start");
    let out = retrying.wait_with_output().unwrap();
    assert!(out.status.success(), "publish after restart: {}", String::from_utf8_lossy(&out.stderr));
    let report: PublishReport = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.written() > 0, "the tables the killed publish never reached are written now");

    // No loss, no duplicates: every table holds exactly its view, and the queries match.
    let c = Cassandra::connect(&CassandraConfig {
        contact_points: vec![node.address()],
        keyspace: "faults".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for t in &report.tables {
        assert_eq!(count(&c, &t.table).await as u64, t.rows, "{}", t.table);
    }
    let orgs = some_orgs(lake).await;
    assert_queries_match(lake, &c, &orgs[..3]).await;
    let again = publish(&Lake::new(lake).unwrap(), &c).await.unwrap();
    assert_eq!((again.written(), again.deleted()), (0, 0));
}

#[test]
fn run_publishes_when_cassandra_is_configured_and_query_reads_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let config_file = dir.path().join("cloudlake.toml");
    let c = config(&shared_node(), "cli");
    std::fs::write(
        &config_file,
        format!(
            "[cassandra]\ncontact_points = [\"{}\"]\nkeyspace = \"{}\"\n",
            c.contact_points[0], c.keyspace
        ),
    )
    .unwrap();
    let out = cloudlake(&lake, &config_file, &["run", "--landing", real_landing().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("published to Cassandra: 26072 rows in 9 tables (26072 written, 0 deleted)"),
        "{stdout}"
    );
    let org = stdout.split("Dashboard queries (org ").nth(1).unwrap().split(',').next().unwrap().to_string();
    for name in ["daily-usage", "top-services", "critical-tickets", "revenue", "genai-tokens", "anomalies"] {
        let answer = |backend: &str| {
            let out = cloudlake(
                &lake,
                &config_file,
                &["query", name, "--org", &org, "-f", "csv", "--backend", backend],
            )
            .output()
            .unwrap();
            assert!(out.status.success(), "{name} {backend}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let (from_lake, from_cassandra) = (answer("lake"), answer("auto"));
        assert!(from_lake.starts_with(match name {
            "critical-tickets" => "ticket_date,",
            "revenue" => "month,",
            "top-services" => "rank,",
            "anomalies" => "usage_date,service,cost_usd,baseline_cost_usd,",
            _ => "usage_date,",
        }));
        assert!(
            matches!(name, "critical-tickets" | "anomalies") || from_lake.lines().count() > 1,
            "{name}: {from_lake}"
        );
        assert_eq!(from_cassandra, from_lake, "{name}");
    }
    let out = cloudlake(&lake, &config_file, &["query", "revenue", "--org", "nope"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "cloudlake: unknown org \"nope\"");
    let empty = dir.path().join("empty.toml");
    std::fs::write(
        &empty,
        format!(
            "[cassandra]\ncontact_points = [\"{}\"]\nkeyspace = \"never_published\"\n",
            c.contact_points[0]
        ),
    )
    .unwrap();
    let out = cloudlake(&lake, &empty, &["query", "revenue"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "cloudlake: nothing is published in Cassandra keyspace never_published yet; run `cloudlake publish` first"
    );
}
