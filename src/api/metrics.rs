//! Prometheus metrics of the API (`GET /metrics`, admin keys): requests by route and status,
//! latency histograms by route, answer-cache hits and misses, and the age of the served data.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template (`/api/v1/queries/{name}`), never the raw path.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
}

/// Every metric the API exports.
pub struct Metrics {
    registry: Registry,
    /// Requests served.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency in seconds.
    pub latency: Family<RouteLabels, Histogram>,
    /// Answers served from the cache.
    pub cache_hits: Counter,
    /// Answers computed by the backend.
    pub cache_misses: Counter,
    /// Seconds since the served data was produced (run or publish).
    pub data_age_seconds: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cloudlake");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_25, 2.0, 16))) as fn() -> Histogram,
        );
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let data_age_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register("answer_cache_hits", "Query answers served from the cache", cache_hits.clone());
        registry.register(
            "answer_cache_misses",
            "Query answers computed by the backend",
            cache_misses.clone(),
        );
        registry.register(
            "data_age_seconds",
            "Seconds since the served data was produced (last run, or last publish to Cassandra)",
            data_age_seconds.clone(),
        );
        Metrics { registry, requests, latency, cache_hits, cache_misses, data_age_seconds }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
