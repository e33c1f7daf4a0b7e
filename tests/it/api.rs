//! The REST API and the dashboard, served in process over the real data's lake: answers equal
//! the query layer page by page, keys and scopes, bad input (never a 500), static-asset path
//! traversal, metrics, OpenAPI, and the dashboard in a real headless Chromium.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudlake::api::auth::{ApiKey, Scope, hash_key, new_key};
use cloudlake::api::{ApiConfig, AppState, Backend};
use cloudlake::lake::Lake;
use cloudlake::serving::{QueryName, QueryParams};
use serde_json::{Value, json};

use crate::real_landing;

struct Server {
    addr: SocketAddr,
    read_key: String,
    admin_key: String,
    lake: PathBuf,
}

/// The bundled data through gold, served on a free loopback port.
async fn server() -> Server {
    let lake = tempfile::tempdir().unwrap().keep();
    crate::run(&real_landing(), &lake).await.unwrap();
    let (read_key, admin_key) = (new_key(), new_key());
    let config = ApiConfig {
        keys: vec![
            ApiKey { name: "dashboard".into(), sha256: hash_key(&read_key), scope: Scope::Read },
            ApiKey { name: "ops".into(), sha256: hash_key(&admin_key), scope: Scope::Admin },
        ],
        ..Default::default()
    };
    let state = Arc::new(AppState::new(Backend::Lake(Lake::new(&lake).unwrap()), &config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(cloudlake::api::serve(state, listener));
    Server { addr, read_key, admin_key, lake }
}

/// A raw HTTP/1.1 request; returns status, headers and body.
fn http(addr: SocketAddr, method: &str, target: &str, key: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // Read the head, then Content-Length bytes (some servers keep the connection open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let body_len = loop {
        let n = s.read(&mut buf).unwrap();
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
            });
            match length {
                Some(len) if body.len() >= len => break Some(len),
                _ if n == 0 => break None,
                _ => {}
            }
        } else if n == 0 {
            break None;
        }
    };
    let _ = body_len;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

async fn get(addr: SocketAddr, target: &str, key: Option<&str>) -> (u16, String, String) {
    let (target, key) = (target.to_string(), key.map(str::to_string));
    tokio::task::spawn_blocking(move || http(addr, "GET", &target, key.as_deref())).await.unwrap()
}

async fn get_json(addr: SocketAddr, target: &str, key: &str) -> (u16, Value) {
    let (status, _, body) = get(addr, target, Some(key)).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("{target}: not JSON: {body}")))
}

/// Every row of a query, following next_cursor.
async fn all_pages(addr: SocketAddr, path: &str, key: &str, limit: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let target = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (status, body) = get_json(addr, &target, key).await;
        assert_eq!(status, 200, "{target}: {body}");
        let page = body["rows"].as_array().unwrap();
        assert!(page.len() <= limit);
        rows.extend(page.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_pages_equal_the_query_layer_and_refuses_bad_input_with_clear_messages() {
    let s = server().await;
    let (addr, key) = (s.addr, s.read_key.as_str());
    let lake = Lake::new(&s.lake).unwrap();
    let orgs = all_pages(addr, "/api/v1/orgs", key, 30).await;
    assert_eq!(orgs.len(), 80);
    let org = orgs[7]["org_id"].as_str().unwrap().to_string();

    // Every query, paged 7 rows at a time, equals the query layer's answer.
    for name in QueryName::ALL {
        let params = QueryParams { org: Some(org.clone()), ..Default::default() };
        let expected = cloudlake::serving::lake::query(&lake, name, &params).await.unwrap();
        let rows = all_pages(addr, &format!("/api/v1/queries/{}?org={org}", name.as_str()), key, 7).await;
        let n: usize = expected.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows.len(), n, "{}", name.as_str());
        if let (Some(first), Some(batch)) = (rows.first(), expected.iter().find(|b| b.num_rows() > 0)) {
            let cols: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
            let keys: Vec<String> = first.as_object().unwrap().keys().cloned().collect();
            let (mut a, mut b) = (cols.clone(), keys);
            a.sort();
            b.sort();
            assert_eq!(a, b);
        }
    }
    // Exact decimals: the daily costs sum to the lake's figure to the last digit.
    let rows = all_pages(addr, &format!("/api/v1/queries/daily-usage?org={org}"), key, 1000).await;
    let micro: i128 =
        rows.iter().map(|r| r["cost_usd"].as_str().unwrap().replace('.', "").parse::<i128>().unwrap()).sum();
    let expected = crate::sql_csv(
        &s.lake,
        &format!("SELECT CAST(sum(cost_usd) * 1000000 AS BIGINT) FROM gold_org_daily_usage_by_service WHERE org_id = '{org}'"),
    )
    .await;
    assert_eq!(micro.to_string(), expected.lines().nth(1).unwrap());

    // Bad input: 400 (or 404) with a clear message, never a 500.
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("/api/v1/queries/daily-usage?org={org}&from=2025-13-45"), 400, "not a date"),
        ("/api/v1/queries/revenue?org=org_nope".into(), 400, "unknown org"),
        ("/api/v1/queries/daily-usage".into(), 400, "needs org"),
        ("/api/v1/queries/revenue?org=x%27%3B%20DROP%20TABLE".into(), 400, "not a valid id"),
        (format!("/api/v1/queries/revenue?org={}", "a".repeat(5000)), 400, "too long"),
        (format!("/api/v1/queries/revenue?org={}", "a".repeat(100)), 400, "not a valid id"),
        ("/api/v1/queries/revenue?limit=100000".into(), 400, "limit must be"),
        ("/api/v1/queries/revenue?cursor=AAAA".into(), 400, "cursor"),
        ("/api/v1/queries/revenue?from=2025-08-01&to=2025-07-01".into(), 400, "after"),
        ("/api/v1/queries/revenue?org=a&org=b".into(), 400, "twice"),
        ("/api/v1/queries/revenue?evil=1".into(), 400, "unknown parameter"),
        ("/api/v1/queries/top-services?org=a&top=-1".into(), 400, "top must be"),
        ("/api/v1/queries/revenue?org=%ff%fe".into(), 400, "not a valid id"),
        ("/api/v1/queries/no-such-query".into(), 404, "no query named"),
        ("/api/v1/queries/top-services?org=a&to=%2B262142-12-31".into(), 400, "outside the years"),
        ("/api/v1/queries/revenue?from=-262143-01-01".into(), 400, "outside the years"),
    ];
    for (target, status, says) in cases {
        let (got, _, body) = get(addr, &target, Some(key)).await;
        assert_eq!(got, status, "{target}: {body}");
        let msg = serde_json::from_str::<Value>(&body).unwrap()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{target}: {msg}");
    }

    // Keys and scopes.
    let q = format!("/api/v1/queries/revenue?org={org}");
    assert_eq!(get(addr, &q, None).await.0, 401);
    let (status, _, body) = get(addr, &q, Some("cl_not_a_key")).await;
    assert_eq!((status, body.as_str()), (401, r#"{"error":"unknown API key"}"#));
    assert_eq!(get(addr, "/metrics", Some(key)).await.0, 403);
    let (status, _, body) = get(addr, "/metrics", Some(&s.admin_key)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(
            r#"cloudlake_http_requests_total{route="/api/v1/queries/{name}",method="GET",status="400"}"#
        ),
        "{body}"
    );
    assert!(
        body.contains("cloudlake_data_age_seconds ")
            && body.contains("cloudlake_http_request_duration_seconds_bucket")
    );
    assert!(!body.contains(key) && !body.contains(&s.admin_key), "keys never appear in metrics");
    let refresh = {
        let (a, k) = (addr, key.to_string());
        tokio::task::spawn_blocking(move || http(a, "POST", "/api/v1/refresh", Some(&k))).await.unwrap()
    };
    assert_eq!(refresh.0, 403);
    let refresh = {
        let (a, k) = (addr, s.admin_key.clone());
        tokio::task::spawn_blocking(move || http(a, "POST", "/api/v1/refresh", Some(&k))).await.unwrap()
    };
    assert_eq!(refresh.0, 204);

    // Health, readiness, OpenAPI.
    assert_eq!(get(addr, "/health", None).await.0, 200);
    let (status, _, ready) = get(addr, "/ready", None).await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains(r#""backend":"lake""#));
    let (status, _, doc) = get(addr, "/openapi.json", None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["openapi"], json!("3.1.0"));
    for name in QueryName::ALL {
        assert!(
            doc["paths"][format!("/api/v1/queries/{}", name.as_str())]["get"].is_object(),
            "{}",
            name.as_str()
        );
    }

    // Static assets come from a fixed table: traversal attempts find nothing.
    let (status, head, js) = get(addr, "/assets/app.js", None).await;
    assert_eq!(status, 200);
    assert!(head.to_lowercase().contains("content-type: text/javascript") && js.contains("cloudlake"));
    for target in [
        "/assets/../Cargo.toml",
        "/assets/..%2FCargo.toml",
        "/assets/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/assets/..%5c..%5cCargo.toml",
        "/../../etc/passwd",
        "/assets/%00",
        "/assets/index.html%00.js",
    ] {
        let (status, _, body) = get(addr, target, None).await;
        assert_eq!(status, 404, "{target}: {body}");
        assert!(!body.contains("[package]") && !body.contains("root:"), "{target}");
    }
}

/// A minimal Chrome DevTools Protocol client over one page target.
struct Browser {
    child: std::process::Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Browser {
        let exe = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|c| std::process::Command::new("which").arg(c).output().is_ok_and(|o| o.status.success()))
            .expect("Chromium is not installed: scripts/setup.sh --test installs Debian's chromium package");
        let profile = tempfile::tempdir().unwrap();
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new(exe)
            // Its own process group, so Drop stops the renderer and GPU processes too.
            .process_group(0)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1400,1200",
            ])
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let port: u16 = loop {
            if let Some(p) =
                std::fs::read_to_string(&port_file).ok().and_then(|t| t.lines().next()?.parse().ok())
            {
                break p;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "Chromium did not open its DevTools port");
            std::thread::sleep(Duration::from_millis(100));
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (_, _, list) = http(addr, "GET", "/json/list", None);
        let targets: Vec<Value> = serde_json::from_str(&list).unwrap();
        let page = targets.iter().find(|t| t["type"] == "page").expect("a page target");
        let (ws, _) = tungstenite::connect(page["webSocketDebuggerUrl"].as_str().unwrap()).unwrap();
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        }
        Browser { child, ws, next_id: 0, _profile: profile }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(tungstenite::Message::text(msg)).unwrap();
        loop {
            let reply = self.ws.read().unwrap_or_else(|e| panic!("no reply to {method}: {e}"));
            let Ok(text) = reply.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    fn wait_for(&mut self, expression: &str, what: &str) {
        let started = Instant::now();
        while self.eval(expression) != json!(true) {
            let error = self.eval("document.body?.dataset.error || null");
            assert!(error.is_null(), "the dashboard reported: {error}");
            assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // SAFETY: signals the process group of the child we spawned (its id is the group id),
        // which holds the renderer and GPU processes it started.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// What the charts show: the selected org, the cost chart's dataset count, point count and total.
const CHART_SUMMARY: &str = r#"(() => {
  const c = window.cloudlake.charts;
  const cost = c.cost.data.datasets;
  const values = cost.flatMap(d => d.data).filter(v => v !== null);
  return {
    org: document.getElementById('org').value,
    renders: window.cloudlake.renders,
    services: cost.length,
    points: values.length,
    total: values.reduce((a, b) => a + b, 0),
    top: c.top.data.labels.length,
    months: c.revenue.data.labels.length,
    flagged: cost.flatMap(d => d.pointRadius).filter(r => r > 0).length,
    charts: Object.keys(c).sort().join(','),
  };
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_draws_the_real_data_in_headless_chromium_and_follows_the_org_picker() {
    let t0 = Instant::now();
    let s = server().await;
    eprintln!("lake built and served in {:?}", t0.elapsed());
    let lake = Lake::new(&s.lake).unwrap();
    let url = format!("http://{}/#key={}", s.addr, s.read_key);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let (first, second, png) = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let mut b = Browser::launch();
        eprintln!("chromium up in {:?}", t0.elapsed());
        b.call("Page.enable", json!({}));
        b.call("Page.navigate", json!({"url": url}));
        b.wait_for("document.body?.dataset.renders === '1'", "the first render");
        eprintln!("first render after {:?}", t0.elapsed());
        let first = b.eval(CHART_SUMMARY);
        // A filter change: pick another org in the picker, as a user would.
        b.eval("(() => { const s = document.getElementById('org'); s.value = s.options[5].value; s.dispatchEvent(new Event('change')); })()");
        b.wait_for("document.body?.dataset.renders === '2'", "the render after the org change");
        let second = b.eval(CHART_SUMMARY);
        eprintln!("second render after {:?}", t0.elapsed());
        let png = b.call("Page.captureScreenshot", json!({"format": "png"}));
        eprintln!("screenshot after {:?}", t0.elapsed());
        (first, second, png["data"].as_str().unwrap().to_string())
    })
    .await
    .unwrap();

    eprintln!("browser closed after {:?}", t0.elapsed());
    assert_eq!(first["charts"], json!("cost,genai,revenue,tickets,top"));
    assert_ne!(first["org"], second["org"], "the picker changed the org");
    for summary in [&first, &second] {
        let org = summary["org"].as_str().unwrap().to_string();
        let params = QueryParams { org: Some(org.clone()), ..Default::default() };
        let usage = cloudlake::serving::lake::query(&lake, QueryName::DailyUsage, &params).await.unwrap();
        let rows: usize = usage.iter().map(|b| b.num_rows()).sum();
        assert_eq!(summary["points"], json!(rows), "{org}: every daily cost is drawn");
        let expected = crate::sql_csv(
            &s.lake,
            &format!("SELECT CAST(sum(cost_usd) AS DOUBLE) FROM gold_org_daily_usage_by_service WHERE org_id = '{org}'"),
        )
        .await;
        let expected: f64 = expected.lines().nth(1).unwrap().parse().unwrap();
        let drawn = summary["total"].as_f64().unwrap();
        assert!((drawn - expected).abs() < 0.005, "{org}: chart total {drawn} vs lake {expected}");
        assert!(summary["services"].as_u64().unwrap() >= 3 && summary["top"].as_u64().unwrap() >= 1);
        assert!(summary["months"].as_u64().unwrap() >= 1);
        let anomalies = cloudlake::serving::lake::query(&lake, QueryName::Anomalies, &params).await.unwrap();
        let n: usize = anomalies.iter().map(|b| b.num_rows()).sum();
        assert_eq!(summary["flagged"], json!(n), "{org}: every anomaly is highlighted");
    }
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "a real screenshot");
    std::fs::write(&shot, bytes).unwrap();
    println!("dashboard screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_from_cassandra_pages_follow_the_paging_state_and_equal_the_lake() {
    let lake_dir = crate::cassandra::real_lake().await;
    let lake = Lake::new(lake_dir).unwrap();
    let c = cloudlake::serving::cassandra::Cassandra::connect(&crate::cassandra::config(
        &crate::cassandra::shared_node(),
        "api",
    ))
    .await
    .unwrap();
    cloudlake::serving::cassandra::publish::publish(&lake, &c).await.unwrap();
    let key = new_key();
    let config = ApiConfig {
        keys: vec![ApiKey { name: "dashboard".into(), sha256: hash_key(&key), scope: Scope::Read }],
        ..Default::default()
    };
    let state = Arc::new(AppState::new(Backend::Cassandra(Box::new(c)), &config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(cloudlake::api::serve(state, listener));

    let (_, ready) = get_json(addr, "/ready", &key).await;
    assert_eq!(ready["backend"], json!("cassandra"));
    let orgs = all_pages(addr, "/api/v1/orgs", &key, 50).await;
    assert_eq!(orgs.len(), 80);
    let org = orgs[3]["org_id"].as_str().unwrap().to_string();
    // A first page of 7 rows carries Cassandra's paging state in its cursor.
    let (status, first) =
        get_json(addr, &format!("/api/v1/queries/daily-usage?org={org}&limit=7"), &key).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["rows"].as_array().unwrap().len(), 7);
    use base64::Engine;
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first["next_cursor"].as_str().unwrap())
        .unwrap();
    let cursor: Value = serde_json::from_slice(&cursor).unwrap();
    assert!(cursor["s"].is_string(), "the cursor holds a paging state: {cursor}");
    for name in QueryName::ALL {
        let params = QueryParams { org: Some(org.clone()), ..Default::default() };
        let expected = cloudlake::serving::lake::query(&lake, name, &params).await.unwrap();
        let n: usize = expected.iter().map(|b| b.num_rows()).sum();
        let rows = all_pages(addr, &format!("/api/v1/queries/{}?org={org}", name.as_str()), &key, 7).await;
        assert_eq!(rows.len(), n, "{}", name.as_str());
        let expected_json: Vec<Value> = expected
            .iter()
            .flat_map(|b| {
                let mut out = Vec::new();
                for r in 0..b.num_rows() {
                    let mut o = serde_json::Map::new();
                    for (i, f) in b.schema().fields().iter().enumerate() {
                        let v = datafusion::scalar::ScalarValue::try_from_array(b.column(i), r).unwrap();
                        let j = if v.is_null() {
                            Value::Null
                        } else {
                            match v {
                                datafusion::scalar::ScalarValue::Int64(Some(n)) => json!(n),
                                datafusion::scalar::ScalarValue::UInt64(Some(n)) => json!(n),
                                datafusion::scalar::ScalarValue::Float64(Some(x)) => json!(x),
                                datafusion::scalar::ScalarValue::Utf8(Some(s)) => json!(s),
                                other => json!(other.to_string()),
                            }
                        };
                        o.insert(f.name().clone(), j);
                    }
                    out.push(Value::Object(o));
                }
                out
            })
            .collect();
        assert_eq!(rows, expected_json, "{}", name.as_str());
    }
    // All-org questions page too.
    let rows = all_pages(addr, "/api/v1/queries/genai-tokens", &key, 10).await;
    let all = cloudlake::serving::lake::query(&lake, QueryName::GenaiTokens, &QueryParams::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), all.iter().map(|b| b.num_rows()).sum::<usize>());
}
