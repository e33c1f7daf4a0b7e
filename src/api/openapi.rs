//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`, built from the same
//! query definitions the handlers use (names, parameters, output columns), so it cannot drift.

use datafusion::arrow::datatypes::DataType;
use serde_json::{Value, json};

use crate::serving::QueryName;
use crate::serving::queries::{MAX_TOP, output_schema};

fn column_schema(t: &DataType) -> Value {
    match t {
        DataType::Date32 => json!({"type": "string", "format": "date"}),
        DataType::Decimal128(_, s) => {
            json!({"type": "string", "description": format!("exact decimal with {s} digits after the point")})
        }
        DataType::Int64 | DataType::UInt64 => json!({"type": "integer"}),
        DataType::Float64 => json!({"type": ["number", "null"]}),
        _ => json!({"type": "string"}),
    }
}

fn param(name: &str, description: &str, schema: Value, required: bool) -> Value {
    json!({"name": name, "in": "query", "required": required, "description": description, "schema": schema})
}

fn page_params() -> Vec<Value> {
    vec![
        param(
            "limit",
            "rows per page (default 100)",
            json!({"type": "integer", "minimum": 1, "maximum": super::MAX_LIMIT}),
            false,
        ),
        param("cursor", "next_cursor of the previous page", json!({"type": "string"}), false),
    ]
}

fn responses(row: Value) -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    json!({
        "200": {"description": "one page of rows", "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["rows", "next_cursor", "data_version"],
            "properties": {
                "query": {"type": "string"},
                "data_version": {"type": "string"},
                "total_rows": {"type": ["integer", "null"], "description": "rows of the whole answer, when known (null for Cassandra pages)"},
                "rows": {"type": "array", "items": row},
                "next_cursor": {"type": ["string", "null"], "description": "pass as cursor for the next page; null on the last"}
            }}}}},
        "400": {"description": "invalid parameter (bad date, unknown org, ...)", "content": {"application/json": {"schema": error}}},
        "401": {"description": "missing or unknown API key", "content": {"application/json": {"schema": error}}},
        "403": {"description": "the key's scope does not allow this", "content": {"application/json": {"schema": error}}},
        "503": {"description": "the backend is unavailable or has no data", "content": {"application/json": {"schema": error}}}
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for name in QueryName::ALL {
        let schema = output_schema(name);
        let properties: serde_json::Map<String, Value> =
            schema.fields().iter().map(|f| (f.name().clone(), column_schema(f.data_type()))).collect();
        let mut params = vec![param(
            "org",
            "organisation id",
            json!({"type": "string", "maxLength": 64}),
            name.needs_org(),
        )];
        if name == QueryName::DailyUsage {
            params.push(param(
                "service",
                "only this service",
                json!({"type": "string", "maxLength": 64}),
                false,
            ));
        }
        params.push(param(
            "from",
            "first date (YYYY-MM-DD)",
            json!({"type": "string", "format": "date"}),
            false,
        ));
        params.push(param(
            "to",
            "last date (YYYY-MM-DD); \"last N days\" end here",
            json!({"type": "string", "format": "date"}),
            false,
        ));
        if name == QueryName::TopServices {
            params.push(param(
                "top",
                "how many services",
                json!({"type": "integer", "minimum": 1, "maximum": MAX_TOP}),
                false,
            ));
        }
        params.extend(page_params());
        let about = format!("{name:?}");
        paths.insert(
            format!("/api/v1/queries/{}", name.as_str()),
            json!({"get": {
                "summary": about,
                "operationId": name.as_str(),
                "security": [{"apiKey": []}, {"bearer": []}],
                "parameters": params,
                "responses": responses(json!({"type": "object", "properties": properties}))
            }}),
        );
    }
    paths.insert(
        "/api/v1/orgs".into(),
        json!({"get": {"summary": "every organisation (for pickers)", "operationId": "orgs",
            "security": [{"apiKey": []}, {"bearer": []}], "parameters": page_params(),
            "responses": responses(json!({"type": "object", "properties": {
                "org_id": {"type": "string"}, "org_name": {"type": "string"},
                "industry": {"type": "string"}, "plan_tier": {"type": "string"}}}))}}),
    );
    paths.insert(
        "/api/v1/refresh".into(),
        json!({"post": {"summary": "drop cached answers now (admin keys)", "operationId": "refresh",
            "security": [{"apiKey": []}, {"bearer": []}],
            "responses": {"204": {"description": "cache dropped"}, "401": {"description": "missing or unknown key"}, "403": {"description": "not an admin key"}}}}),
    );
    paths.insert("/health".into(), json!({"get": {"summary": "liveness", "responses": {"200": {"description": "the process serves requests"}}}}));
    paths.insert(
        "/ready".into(),
        json!({"get": {"summary": "readiness: the backend answers and has data", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready, with the reason"}}}}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {"summary": "Prometheus metrics (admin keys)", "security": [{"apiKey": []}, {"bearer": []}],
            "responses": {"200": {"description": "OpenMetrics text"}}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "cloudlake API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The dashboard queries over the gold marts, from Cassandra or the lake."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"}
            },
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}
        }
    })
}
