//! `cloudlake serve`: the REST API and the dashboard, one axum server.
//!
//! | route | auth | does |
//! |---|---|---|
//! | `GET /api/v1/queries/{name}` | read | a dashboard query, paginated (`limit`, `cursor`) |
//! | `GET /api/v1/orgs` | read | every org, paginated (the dashboard's picker) |
//! | `POST /api/v1/refresh` | admin | drop cached answers now |
//! | `GET /metrics` | admin | Prometheus metrics |
//! | `GET /health`, `GET /ready` | none | liveness; readiness = the backend answers and has data |
//! | `GET /openapi.json` | none | the OpenAPI document |
//! | `GET /`, `/dashboard`, `/assets/{name}` | none | the dashboard (its data calls need a key) |
//!
//! Answers come from Cassandra when configured, else from the lake, and are cached per query
//! and parameters until the data changes: the server checks the data version (latest run
//! report, or `serving_state.published_at`) at most once a second. From the lake a page is a
//! slice of one answer; from Cassandra it is one Cassandra page, and its cursor carries the
//! driver's paging state. Either way the cursor names the data version, so pages never mix two
//! versions.

pub mod auth;
pub mod dashboard;
pub mod metrics;
pub mod openapi;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use base64::Engine;
use datafusion::arrow::array::RecordBatch;
use datafusion::scalar::ScalarValue;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::lake::Lake;
use crate::serving::cassandra::Cassandra;
use crate::serving::cassandra::query::PageCursor;
use crate::serving::queries::parse_date;
use crate::serving::{QueryName, QueryParams};
use crate::{Error, Result};
use auth::{ApiKey, Denied, Keys, Scope};

/// Default rows per page.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page.
pub const MAX_LIMIT: usize = 1000;
/// Longest query string accepted.
const MAX_QUERY_STRING: usize = 2048;
/// Longest single parameter value.
const MAX_VALUE: usize = 128;
/// Cached answers kept before the cache is emptied.
const MAX_CACHED: usize = 10_000;

/// The `[api]` table of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on.
    pub listen: String,
    /// Whether API keys are required (the default). `false` is for a local demo only.
    pub require_keys: bool,
    /// Accepted keys, as hashes.
    pub keys: Vec<ApiKey>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: "127.0.0.1:8080".into(), require_keys: true, keys: Vec::new() }
    }
}

/// Where answers come from.
pub enum Backend {
    /// The gold marts in the lake.
    Lake(Lake),
    /// The serving tables in Cassandra.
    Cassandra(Box<Cassandra>),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Lake(_) => "lake",
            Backend::Cassandra(_) => "cassandra",
        }
    }

    async fn orgs(&self) -> Result<Vec<RecordBatch>> {
        match self {
            Backend::Lake(lake) => crate::serving::lake::orgs(lake).await,
            Backend::Cassandra(c) => crate::serving::cassandra::query::orgs(c).await,
        }
    }

    /// The version of the served data and when it was produced; `None` when there is none.
    async fn version(&self) -> Result<Option<(String, chrono::DateTime<chrono::Utc>)>> {
        match self {
            Backend::Lake(lake) => {
                // The latest run, plus each stream's latest micro-batch: a stream changes the
                // marts between runs.
                let run = crate::quality::latest_run(lake).await.ok().map(|r| {
                    let at = chrono::DateTime::parse_from_rfc3339(&r.started_at)
                        .map(|t| {
                            t.with_timezone(&chrono::Utc) + chrono::TimeDelta::milliseconds(r.millis as i64)
                        })
                        .unwrap_or_else(|_| chrono::Utc::now());
                    (r.run_id, at)
                });
                let Some((mut version, mut at)) = run else { return Ok(None) };
                for (stream, batch, when) in crate::stream::checkpoint::latest_batches(lake) {
                    version.push_str(&format!("+{stream}@{batch}"));
                    at = at.max(chrono::DateTime::<chrono::Utc>::from(when));
                }
                Ok(Some((version, at)))
            }
            Backend::Cassandra(c) => crate::serving::cassandra::query::published_at(c)
                .await
                .map(|t| t.map(|t| (t.timestamp_millis().to_string(), t))),
        }
    }
}

/// One computed answer (or, from Cassandra, one page of it), as JSON rows.
struct Answer {
    rows: Vec<Value>,
    /// Where the next Cassandra page starts, for a page.
    next: Option<PageCursor>,
}

struct Version {
    checked: Option<Instant>,
    current: Option<(String, chrono::DateTime<chrono::Utc>)>,
}

/// The server's shared state.
pub struct AppState {
    backend: Backend,
    keys: Keys,
    require_keys: bool,
    metrics: metrics::Metrics,
    cache: Mutex<HashMap<String, Arc<Answer>>>,
    version: tokio::sync::Mutex<Version>,
}

impl AppState {
    /// State for `backend` with the `[api]` settings; refuses to run without keys unless keys
    /// are explicitly not required.
    pub fn new(backend: Backend, config: &ApiConfig) -> Result<Self> {
        let keys = Keys::new(&config.keys).map_err(Error::Config)?;
        if config.require_keys && keys.is_empty() {
            return Err(Error::Config(
                "the API requires keys and none is configured: run `cloudlake api-key` and add the [[api.keys]] entry it prints (or set require_keys = false in [api] for a local demo)".into(),
            ));
        }
        Ok(AppState {
            backend,
            keys,
            require_keys: config.require_keys,
            metrics: metrics::Metrics::default(),
            cache: Mutex::new(HashMap::new()),
            version: tokio::sync::Mutex::new(Version { checked: None, current: None }),
        })
    }

    /// The data version, re-read at most once a second; a change empties the cache (answers are
    /// also keyed by version, so an answer computed from older data is never served as newer).
    /// The backend is asked without holding the lock, for at most 5 s.
    async fn data_version(&self) -> Result<Option<(String, chrono::DateTime<chrono::Utc>)>> {
        {
            let v = self.version.lock().await;
            if v.checked.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Ok(v.current.clone());
            }
        }
        let now = match tokio::time::timeout(Duration::from_secs(5), self.backend.version()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Cassandra("the data version did not arrive within 5 s".into())),
        };
        let mut v = self.version.lock().await;
        v.checked = Some(Instant::now());
        let now = now?;
        if now.as_ref().map(|x| &x.0) != v.current.as_ref().map(|x| &x.0) {
            self.cache.lock().map_err(|_| poisoned())?.clear();
        }
        v.current = now;
        Ok(v.current.clone())
    }

    async fn cached(
        &self,
        key: String,
        compute: impl std::future::Future<Output = Result<(Vec<RecordBatch>, Option<PageCursor>)>>,
    ) -> Result<Arc<Answer>> {
        if let Some(a) = self.cache.lock().map_err(|_| poisoned())?.get(&key) {
            self.metrics.cache_hits.inc();
            return Ok(a.clone());
        }
        self.metrics.cache_misses.inc();
        let (batches, next) = compute.await?;
        let answer = Arc::new(Answer { rows: json_rows(&batches)?, next });
        let mut cache = self.cache.lock().map_err(|_| poisoned())?;
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, answer.clone());
        Ok(answer)
    }
}

fn poisoned() -> Error {
    Error::Internal("answer cache lock poisoned".into())
}

/// The router with every route and middleware.
pub fn router(state: Arc<AppState>) -> Router {
    let read = Router::new()
        .route("/api/v1/queries/{name}", get(query_handler))
        .route("/api/v1/orgs", get(orgs_handler))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_read));
    let admin = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/api/v1/refresh", post(refresh_handler))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .merge(read)
        .merge(admin)
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready_handler))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/", get(dashboard::index))
        .route("/dashboard", get(dashboard::index))
        .route("/assets/{name}", get(dashboard::file))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; see /openapi.json".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn serve(state: Arc<AppState>, listener: tokio::net::TcpListener) -> Result<()> {
    let addr = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    tracing::info!("serving the API and dashboard on http://{addr}/ from the {}", state.backend.name());
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| Error::io(addr.to_string(), e))
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// A JSON error body `{"error": message}`.
pub fn error(status: StatusCode, message: String) -> Response {
    ApiError { status, message }.into_response()
}

/// A refused or failed request: its status and one clear sentence.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Usage(m) => ApiError { status: StatusCode::BAD_REQUEST, message: m.replace("--", "") },
            Error::Cassandra(m) => {
                ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: format!("Cassandra: {m}") }
            }
            other => {
                tracing::error!("request failed: {other}");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "internal error; see the server log".into(),
                }
            }
        }
    }
}

async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // A fixed set of labels: anyone can send any method, and every label value is a series.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "HEAD") => m,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let m = &state.metrics;
    m.latency
        .get_or_create(&metrics::RouteLabels { route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&metrics::RequestLabels { route, method, status: response.status().as_u16() })
        .inc();
    response
}

fn authorize(state: &AppState, headers: &HeaderMap, need: Scope) -> std::result::Result<(), ApiError> {
    if !state.require_keys {
        return Ok(());
    }
    state.keys.check(headers, need).map(|_| ()).map_err(|d| {
        let (status, message) = match d {
            Denied::Missing => (
                StatusCode::UNAUTHORIZED,
                "missing API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'".to_string(),
            ),
            Denied::Unknown => (StatusCode::UNAUTHORIZED, "unknown API key".to_string()),
            Denied::Forbidden { name } => (
                StatusCode::FORBIDDEN,
                format!("API key {name:?} is read-only; this endpoint needs an admin key"),
            ),
        };
        ApiError { status, message }
    })
}

async fn require_read(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match authorize(&state, request.headers(), Scope::Read) {
        Ok(()) => next.run(request).await,
        Err(r) => r.into_response(),
    }
}

async fn require_admin(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match authorize(&state, request.headers(), Scope::Admin) {
        Ok(()) => next.run(request).await,
        Err(r) => r.into_response(),
    }
}

/// Parsed query-string parameters.
#[derive(Debug, Default)]
struct Params {
    query: QueryParams,
    limit: usize,
    cursor: Option<Cursor>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Cursor {
    /// Data version of the answer.
    v: String,
    /// Offset of the next row (lake), or index of the partition read (Cassandra).
    o: usize,
    /// The query and parameters the cursor belongs to.
    k: String,
    /// Cassandra's paging state within the partition, URL-safe base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
}

fn encode_cursor(c: &Cursor) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::BAD_REQUEST, message: m.into() }
}

fn parse_params(raw: Option<&str>, allowed: &[&str]) -> std::result::Result<Params, ApiError> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY_STRING {
        return Err(bad(format!("query string too long ({} bytes, at most {MAX_QUERY_STRING})", raw.len())));
    }
    let mut p = Params { limit: DEFAULT_LIMIT, ..Default::default() };
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if !allowed.contains(&k.as_ref()) && k != "limit" && k != "cursor" {
            return Err(bad(format!(
                "unknown parameter {k:?}; this endpoint takes {}, limit, cursor",
                allowed.join(", ")
            )));
        }
        if seen.contains(&k.to_string()) {
            return Err(bad(format!("parameter {k:?} given twice")));
        }
        seen.push(k.to_string());
        if v.len() > MAX_VALUE && k != "cursor" {
            return Err(bad(format!("parameter {k:?} is too long (at most {MAX_VALUE} characters)")));
        }
        let v = v.trim();
        let number = |what: &str| {
            v.parse::<usize>().map_err(|_| bad(format!("{what} must be a positive whole number, not {v:?}")))
        };
        match k.as_ref() {
            "org" => p.query.org = Some(v.to_string()),
            "service" => p.query.service = Some(v.to_string()),
            "from" => p.query.from = Some(parse_date(v).map_err(|e| bad(format!("from: {e}")))?),
            "to" => p.query.to = Some(parse_date(v).map_err(|e| bad(format!("to: {e}")))?),
            "top" => p.query.top = Some(number("top")?),
            "limit" => {
                p.limit = number("limit")?;
                if p.limit == 0 || p.limit > MAX_LIMIT {
                    return Err(bad(format!("limit must be between 1 and {MAX_LIMIT}")));
                }
            }
            "cursor" => {
                let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(v)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Cursor>(&b).ok())
                    .ok_or_else(|| bad("cursor is not one this server issued"))?;
                p.cursor = Some(cursor);
            }
            _ => {}
        }
    }
    Ok(p)
}

/// The request's cursor, checked against the query and the data version.
fn own_cursor<'a>(
    params: &'a Params,
    key: &str,
    version: &str,
) -> std::result::Result<Option<&'a Cursor>, ApiError> {
    match &params.cursor {
        None => Ok(None),
        Some(c) if c.k != key => Err(bad("cursor belongs to another query or other parameters")),
        Some(c) if c.v != version => {
            Err(bad("the data changed since this cursor was issued; start again without a cursor"))
        }
        Some(c) => Ok(Some(c)),
    }
}

/// One page of `answer`, with the cursor of the next.
fn page(answer: &Answer, params: &Params, key: &str, version: &str) -> std::result::Result<Value, ApiError> {
    let offset = own_cursor(params, key, version)?.map_or(0, |c| c.o);
    if offset > answer.rows.len() {
        return Err(bad("cursor is not one this server issued"));
    }
    let end = offset.saturating_add(params.limit).min(answer.rows.len());
    let rows = answer.rows.get(offset.min(end)..end).unwrap_or_default();
    let next = (end < answer.rows.len())
        .then(|| encode_cursor(&Cursor { v: version.to_string(), o: end, k: key.to_string(), s: None }));
    Ok(json!({
        "data_version": version,
        "total_rows": answer.rows.len(),
        "rows": rows,
        "next_cursor": next,
    }))
}

async fn current_version(state: &AppState) -> std::result::Result<String, ApiError> {
    match state.data_version().await? {
        Some((v, _)) => Ok(v),
        None => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "no data to serve yet: run `cloudlake run` (and `cloudlake publish` for Cassandra)"
                .into(),
        }),
    }
}

async fn query_handler(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> std::result::Result<Json<Value>, ApiError> {
    let Some(query) = QueryName::ALL.into_iter().find(|q| q.as_str() == name) else {
        let names: Vec<&str> = QueryName::ALL.iter().map(|q| q.as_str()).collect();
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no query named {name:?}; queries: {}", names.join(", ")),
        });
    };
    let allowed: &[&str] = match query {
        QueryName::DailyUsage => &["org", "service", "from", "to"],
        QueryName::TopServices => &["org", "to", "top"],
        QueryName::CriticalTickets => &["org", "to"],
        _ => &["org", "from", "to"],
    };
    let params = parse_params(raw.as_deref(), allowed)?;
    params.query.validate(query)?;
    let version = current_version(&state).await?;
    let key = format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(format!("{}|{:?}", query.as_str(), params.query).as_bytes())
    );
    let mut body = match &state.backend {
        Backend::Cassandra(c) => {
            // From Cassandra, a page is a Cassandra page: the cursor carries its paging state.
            let at = match own_cursor(&params, &key, &version)? {
                None => PageCursor::default(),
                Some(cur) => PageCursor {
                    partition: cur.o,
                    state: match &cur.s {
                        None => None,
                        Some(s) => Some(
                            base64::engine::general_purpose::URL_SAFE_NO_PAD
                                .decode(s)
                                .map_err(|_| bad("cursor is not one this server issued"))?,
                        ),
                    },
                },
            };
            let page_key = format!("{version}|{key}|{}|{:?}|{}", at.partition, at.state, params.limit);
            let page =
                crate::serving::cassandra::query::query_page(c, query, &params.query, at, params.limit);
            let answer = state
                .cached(page_key, async move { page.await.map(|(batch, next)| (vec![batch], next)) })
                .await?;
            let next = answer.next.as_ref().map(|n| {
                encode_cursor(&Cursor {
                    v: version.clone(),
                    o: n.partition,
                    k: key.clone(),
                    s: n.state.as_ref().map(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)),
                })
            });
            json!({"data_version": version, "total_rows": null, "rows": answer.rows, "next_cursor": next})
        }
        Backend::Lake(lake) => {
            let compute = crate::serving::lake::query(lake, query, &params.query);
            let answer = state
                .cached(format!("{version}|{key}"), async move { compute.await.map(|b| (b, None)) })
                .await?;
            page(&answer, &params, &key, &version)?
        }
    };
    body["query"] = json!(query.as_str());
    Ok(Json(body))
}

async fn orgs_handler(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> std::result::Result<Json<Value>, ApiError> {
    let params = parse_params(raw.as_deref(), &[])?;
    let version = current_version(&state).await?;
    let key = "orgs".to_string();
    let compute = state.backend.orgs();
    let answer =
        state.cached(format!("{version}|{key}"), async move { compute.await.map(|b| (b, None)) }).await?;
    Ok(Json(page(&answer, &params, &key, &version)?))
}

async fn ready_handler(State(state): State<Arc<AppState>>) -> Response {
    match state.data_version().await {
        Ok(Some((v, at))) => Json(json!({
            "status": "ready", "backend": state.backend.name(), "data_version": v, "data_produced_at": at.to_rfc3339()
        }))
        .into_response(),
        Ok(None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "backend": state.backend.name(), "error": "no data published yet"})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "backend": state.backend.name(), "error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    if let Ok(Some((_, at))) = state.data_version().await {
        state.metrics.data_age_seconds.set((chrono::Utc::now() - at).as_seconds_f64().max(0.0));
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

async fn refresh_handler(State(state): State<Arc<AppState>>) -> Response {
    if let Ok(mut cache) = state.cache.lock() {
        cache.clear();
    }
    state.version.lock().await.checked = None;
    StatusCode::NO_CONTENT.into_response()
}

/// Rows of `batches` as JSON objects: decimals as exact strings, dates as `YYYY-MM-DD`.
fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for b in batches {
        let schema = b.schema();
        for r in 0..b.num_rows() {
            let mut obj = serde_json::Map::with_capacity(b.num_columns());
            for (i, field) in schema.fields().iter().enumerate() {
                obj.insert(field.name().clone(), json_value(ScalarValue::try_from_array(b.column(i), r)?));
            }
            rows.push(Value::Object(obj));
        }
    }
    Ok(rows)
}

fn json_value(v: ScalarValue) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    match v {
        ScalarValue::Int64(Some(n)) => json!(n),
        ScalarValue::Int32(Some(n)) => json!(n),
        ScalarValue::UInt64(Some(n)) => json!(n),
        ScalarValue::Float64(Some(x)) => serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number),
        ScalarValue::Boolean(Some(b)) => json!(b),
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => {
            json!(s)
        }
        other => json!(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_with_clear_messages() {
        let ok = parse_params(Some("org=o1&from=2025-07-01&to=2025-07-31&limit=10"), &["org", "from", "to"])
            .unwrap();
        assert_eq!(ok.query.org.as_deref(), Some("o1"));
        assert_eq!(ok.limit, 10);
        for (raw, _why) in [
            ("from=2025-13-01", "bad date"),
            ("bogus=1", "unknown parameter"),
            ("org=a&org=b", "twice"),
            ("limit=0", "limit"),
            ("limit=abc", "limit"),
            ("cursor=notacursor", "cursor"),
        ] {
            assert!(parse_params(Some(raw), &["org", "from", "to"]).is_err(), "{raw}");
        }
        let long = format!("org={}", "a".repeat(MAX_QUERY_STRING));
        assert!(parse_params(Some(&long), &["org"]).is_err());
    }

    #[test]
    fn pages_chain_through_cursors_of_one_version() {
        let answer = Answer { rows: (0..5).map(|i| json!({"i": i})).collect(), next: None };
        let mut params = Params { limit: 2, ..Default::default() };
        let mut seen = Vec::new();
        loop {
            let body = page(&answer, &params, "k", "v1").unwrap();
            seen.extend(body["rows"].as_array().unwrap().iter().map(|r| r["i"].as_i64().unwrap()));
            let Some(next) = body["next_cursor"].as_str() else { break };
            let raw = format!("cursor={next}");
            params.cursor = parse_params(Some(&raw), &[]).unwrap().cursor;
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        params.cursor = Some(Cursor { v: "v0".into(), o: 2, k: "k".into(), s: None });
        assert!(page(&answer, &params, "k", "v1").is_err(), "a cursor of older data is refused");
        params.cursor = Some(Cursor { v: "v1".into(), o: 2, k: "other".into(), s: None });
        assert!(page(&answer, &params, "k", "v1").is_err(), "a cursor of another query is refused");
        params.cursor = Some(Cursor { v: "v1".into(), o: usize::MAX, k: "k".into(), s: None });
        assert!(page(&answer, &params, "k", "v1").is_err(), "a forged offset is refused");
    }

    #[test]
    fn values_are_exact_in_json() {
        assert_eq!(json_value(ScalarValue::Decimal128(Some(1_234_500), 18, 6)), json!("1.234500"));
        assert_eq!(json_value(ScalarValue::Date32(Some(20_300))), json!("2025-07-31"));
        assert_eq!(json_value(ScalarValue::Float64(Some(f64::NAN))), Value::Null);
        assert_eq!(json_value(ScalarValue::Int64(None)), Value::Null);
    }
}
