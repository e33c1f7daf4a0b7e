//! The dashboard's static assets, compiled into the binary: our page, script and style from
//! `web/src/`, and Chart.js from npm in `web/dist/` (put there by `web/build.sh`). They are served from a fixed table, never from the
//! file system, so no request path can reach a file outside it.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// (name, content type, bytes) of every asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../web/src/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../web/src/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../web/src/style.css")),
    ("chart.umd.min.js", "text/javascript; charset=utf-8", include_bytes!("../../web/dist/chart.umd.min.js")),
    (
        "chart.js.LICENSE.md",
        "text/markdown; charset=utf-8",
        include_bytes!("../../web/dist/chart.js.LICENSE.md"),
    ),
];

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *bytes,
        )
            .into_response(),
        None => super::error(StatusCode::NOT_FOUND, format!("no asset named {name:?}")),
    }
}

/// `GET /` and `GET /dashboard`.
pub async fn index() -> Response {
    asset("index.html")
}

/// `GET /assets/{name}`.
pub async fn file(Path(name): Path<String>) -> Response {
    asset(&name)
}
