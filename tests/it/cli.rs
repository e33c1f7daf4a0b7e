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
