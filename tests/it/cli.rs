//! The `cloudlake` binary as a user runs it.

use std::process::Command;

use crate::messy_landing;

fn cloudlake() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cloudlake"));
    c.env_remove("CLOUDLAKE_LAKE").env_remove("CLOUDLAKE_LANDING").env_remove("CLOUDLAKE_CONFIG");
    c
}

#[test]
fn run_then_sql_in_every_format() {
    let lake = tempfile::tempdir().unwrap();
    let out = cloudlake()
        .args(["run", "--landing"])
        .arg(messy_landing())
        .arg("--lake")
        .arg(lake.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("usage_events"), "{stdout}");
    assert!(stdout.contains("report: "), "{stdout}");

    // Environment variables work like flags.
    let sql = |format: &str| {
        let out = cloudlake()
            .env("CLOUDLAKE_LAKE", lake.path())
            .args(["sql", "SELECT event_id, service FROM bronze_usage_events WHERE event_id IN ('e1','e9') ORDER BY event_id", "--format", format])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(sql("csv"), "event_id,service\ne1,compute\ne9,GenAI\n");
    assert_eq!(
        sql("json").trim(),
        r#"[{"event_id":"e1","service":"compute"},{"event_id":"e9","service":"GenAI"}]"#
    );
    assert!(sql("table").contains("| e9       | GenAI   |"));
}

#[test]
fn failures_are_one_sentence_and_exit_non_zero() {
    let lake = tempfile::tempdir().unwrap();
    let out = cloudlake()
        .args(["run", "--landing", "/nonexistent/landing"])
        .arg("--lake")
        .arg(lake.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("cloudlake: landing input /nonexistent/landing not found"), "{stderr}");

    let cfg = lake.path().join("c.toml");
    std::fs::write(&cfg, "lak = \"x\"\n").unwrap();
    let out = cloudlake().args(["sql", "SELECT 1", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("cloudlake: invalid configuration:") && stderr.contains("lak"), "{stderr}");

    let out = cloudlake().arg("--lake").arg(lake.path()).args(["sql", "SELEKT"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().starts_with("cloudlake: "));
}

#[test]
fn config_file_sets_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("from-config");
    let cfg = dir.path().join("cloudlake.toml");
    std::fs::write(&cfg, format!("landing = {:?}\nlake = {:?}\n", messy_landing(), lake)).unwrap();
    let out = cloudlake().arg("run").arg("--config").arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(lake.join("bronze/usage_events/_delta_log").is_dir());
}

#[test]
fn help_explains_every_command() {
    let out = cloudlake().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["run", "sql", "--landing", "--lake", "--config"] {
        assert!(help.contains(word), "{help}");
    }
}

#[test]
fn quality_reports_rules_counts_and_examples() {
    let lake = tempfile::tempdir().unwrap();
    let out = cloudlake()
        .args(["run", "--landing"])
        .arg(messy_landing())
        .arg("--lake")
        .arg(lake.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(summary.contains("usage_events.cost_not_negative"), "{summary}");

    let out = cloudlake().arg("--lake").arg(lake.path()).args(["quality", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules = report["rules"].as_array().unwrap();
    let find = |id: &str| rules.iter().find(|r| r["rule"] == id).unwrap_or_else(|| panic!("{id} missing"));
    let malformed = find("bronze.malformed_json");
    assert_eq!(
        (malformed["source"].as_str(), malformed["violations"].as_u64()),
        (Some("usage_events"), Some(1))
    );
    assert!(malformed["examples"][0].as_str().unwrap().starts_with("{\"event_id\": \"e6\""));
    let version = find("usage_events.schema_version_known");
    assert_eq!((version["action"].as_str(), version["violations"].as_u64()), (Some("quarantine"), Some(1)));
    assert!(version["examples"][0].as_str().unwrap().contains("\"event_id\":\"e11\""));
    let region = find("usage_events.region_known");
    assert_eq!((region["action"].as_str(), region["violations"].as_u64()), (Some("warn"), Some(1)));
    assert!(region["examples"][0].as_str().unwrap().contains("mars-north"));
    assert!(find("usage_events.cost_present")["pass_rate"].as_f64().unwrap() == 100.0);

    let out = cloudlake().arg("--lake").arg(lake.path()).arg("quality").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("usage_events.region_known — region is not a known region"), "{text}");

    let empty = tempfile::tempdir().unwrap();
    let out = cloudlake().arg("--lake").arg(empty.path()).arg("quality").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("run `cloudlake run` first"));
}
