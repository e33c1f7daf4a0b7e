//! Integration tests, one binary (one link step): real landing data and hand-made fixtures.

mod api;
mod bronze;
mod cassandra;
mod cli;
mod cluster;
mod generate;
mod gold;
mod kafka;
mod s3;
mod silver;
mod stream;

use std::path::{Path, PathBuf};

use cloudlake::config::Settings;
use cloudlake::lake::Lake;
use cloudlake::report::RunReport;
use cloudlake::telemetry::Progress;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;

/// The bundled real landing data.
pub fn real_landing() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datalake/landing")
}

/// The hand-made messy fixture landing folder.
pub fn messy_landing() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/messy")
}

/// Copies a landing folder into `dest` (so a test can add files to it).
pub fn copy_dir(from: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let to = dest.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// A copy of the bundled landing data (so a test can add files to it) and the text of its
/// master `<name>.csv`.
pub fn real_landing_copy(name: &str) -> (tempfile::TempDir, String) {
    let landing = tempfile::tempdir().unwrap();
    copy_dir(&real_landing(), landing.path());
    let text = std::fs::read_to_string(landing.path().join(format!("{name}.csv"))).unwrap();
    (landing, text)
}

/// Runs the pipeline once, as `cloudlake run` does.
pub async fn run(landing: &Path, lake: &Path) -> cloudlake::Result<RunReport> {
    run_with(landing, lake, Default::default()).await
}

/// Runs the pipeline once with silver settings (rule overrides, anomaly thresholds).
pub async fn run_with(
    landing: &Path,
    lake: &Path,
    silver: cloudlake::silver::SilverSettings,
) -> cloudlake::Result<RunReport> {
    let settings = Settings {
        landing: landing.to_path_buf(),
        lake: lake.to_path_buf(),
        batch_bytes: 64 * 1024 * 1024,
        silver,
        full_refresh: false,
        cassandra: None,
        api: Default::default(),
        stream: Default::default(),
        ballista: None,
    };
    cloudlake::pipeline::run(&settings, &Progress::new(0, false)).await
}

/// Runs SQL over the lake.
pub async fn sql(lake: &Path, q: &str) -> Vec<RecordBatch> {
    cloudlake::sql::query(&Lake::new(lake).unwrap(), q).await.unwrap()
}

/// Runs SQL and renders the result as text (for exact comparisons).
pub async fn sql_text(lake: &Path, q: &str) -> String {
    pretty_format_batches(&sql(lake, q).await).unwrap().to_string()
}

/// Runs SQL returning one integer.
pub async fn sql_i64(lake: &Path, q: &str) -> i64 {
    let batches = sql(lake, q).await;
    let col = datafusion::arrow::compute::cast(
        batches[0].column(0),
        &datafusion::arrow::datatypes::DataType::Int64,
    )
    .unwrap();
    col.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap().value(0)
}

/// Runs SQL and renders the result as CSV (header + rows), the easiest form to assert exactly.
pub async fn sql_csv(lake: &Path, q: &str) -> String {
    let mut out = Vec::new();
    cloudlake::sql::write_batches(&sql(lake, q).await, cloudlake::sql::OutputFormat::Csv, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// Asserts two long texts are equal, printing only the first line that differs.
#[track_caller]
pub fn assert_same_text(actual: &str, expected: &str) {
    if actual == expected {
        return;
    }
    let (a, e): (Vec<&str>, Vec<&str>) = (actual.lines().collect(), expected.lines().collect());
    let i = a.iter().zip(&e).position(|(x, y)| x != y).unwrap_or(a.len().min(e.len()));
    panic!(
        "texts differ at line {} of {}/{}:\n  actual:   {}\n  expected: {}",
        i + 1,
        a.len(),
        e.len(),
        a.get(i).unwrap_or(&"<end>"),
        e.get(i).unwrap_or(&"<end>")
    );
}
