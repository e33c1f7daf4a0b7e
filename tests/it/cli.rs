//! The `cloudlake` binary as a user runs it.

use std::process::Command;

use crate::messy_landing;

fn cloudlake() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cloudlake"));
    c.env_remove("CLOUDLAKE_LAKE").env_remove("CLOUDLAKE_LANDING").env_remove("CLOUDLAKE_CONFIG");
    c
}

/// Runs `cloudlake run` and returns its standard output; fails the test on a non-zero exit.
fn run_ok(landing: &std::path::Path, lake: &std::path::Path) -> String {
    let out = cloudlake().arg("run").arg("--landing").arg(landing).arg("--lake").arg(lake).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn run_then_sql_in_every_format() {
    let lake = tempfile::tempdir().unwrap();
    let stdout = run_ok(&messy_landing(), lake.path());
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
    let summary = run_ok(&messy_landing(), lake.path());
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

#[test]
fn query_answers_the_five_dashboard_questions_and_maintain_keeps_the_data() {
    let lake = tempfile::tempdir().unwrap();
    let summary = run_ok(&crate::real_landing(), lake.path());
    for q in ["daily-usage (", "top-services (", "critical-tickets (", "revenue (", "genai-tokens ("] {
        assert!(summary.contains(q), "run prints a short answer to {q}: {summary}");
    }
    let query = |args: &[&str]| {
        let out = cloudlake().arg("--lake").arg(lake.path()).arg("query").args(args).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    // Values checked against the raw files: org_pbhsahxt's August 2025 invoice is 2048.95 USD
    // subtotal, 25.93 credits, 430.28 taxes.
    let (code, csv, _) =
        query(&["revenue", "--org", "org_pbhsahxt", "--from", "2025-08-01", "--format", "csv"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        csv,
        "month,subtotal_usd,credits_usd,taxes_usd,revenue_usd,invoices\n2025-08-01,2048.950000,25.930000,430.280000,2453.300000,1\n"
    );
    let (_, csv, _) = query(&["top-services", "--org", "org_pbhsahxt", "--top", "2", "-f", "csv"]);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("rank,service,cost_usd,requests\n1,"), "{csv}");
    let (_, csv, _) = query(&["critical-tickets", "-f", "csv"]);
    let critical: u64 =
        csv.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse::<u64>().unwrap()).sum();
    assert!(critical > 0 && critical <= 56, "{csv}");
    let (_, json, _) =
        query(&["genai-tokens", "--org", "org_pbhsahxt", "--from", "2025-08-31", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    let (_, csv, _) = query(&[
        "daily-usage",
        "--org",
        "org_pbhsahxt",
        "--service",
        "compute",
        "--from",
        "2025-08-30",
        "--to",
        "2025-08-31",
        "-f",
        "csv",
    ]);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // Bad input: one sentence, exit 2.
    for (args, msg) in [
        (vec!["daily-usage"], "daily-usage needs --org ID"),
        (vec!["revenue", "--org", "org_nope"], "unknown org \"org_nope\""),
        (vec!["revenue", "--from", "2025-09-01", "--to", "2025-08-01"], "is after --to"),
    ] {
        let (code, _, err) = query(&args);
        assert_eq!(code, Some(2), "{args:?}");
        assert!(err.starts_with("cloudlake: ") && err.contains(msg), "{err}");
    }

    // Maintenance compacts and vacuums without changing a single row.
    let totals = || {
        let out = cloudlake()
            .arg("--lake")
            .arg(lake.path())
            .args(["sql", "SELECT (SELECT count(*) FROM bronze_usage_events) b, (SELECT sum(cost_usd) FROM silver_usage_events) s, (SELECT sum(revenue_usd) FROM gold_revenue_by_org_month) g", "-f", "csv"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let before = (query(&["revenue", "-f", "csv"]).1, totals());
    let out = cloudlake()
        .arg("--lake")
        .arg(lake.path())
        .args(["maintain", "--retain-hours", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout).unwrap().contains("gold/revenue_by_org_month"));
    assert_eq!((query(&["revenue", "-f", "csv"]).1, totals()), before);
    assert!(before.1.contains("43200,148351.5759"), "{}", before.1);
}
