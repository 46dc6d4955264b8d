//! Prometheus metrics of a long-running `ingot worker`: items by batch type and outcome, item
//! duration, and batches by status, served as text on `GET /metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::store::{BatchStatus, batches};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ItemLabels {
    batch_type: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    batch_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

/// The metrics of one host.
pub struct Metrics {
    registry: Registry,
    items: Family<ItemLabels, Counter>,
    durations: Family<TypeLabels, Histogram>,
    batches: Family<StatusLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Empty metrics, registered under the `ingot_` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("ingot");
        let items = Family::<ItemLabels, Counter>::default();
        // 0.5 ms to about 16 s.
        let durations = Family::<TypeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let batches = Family::<StatusLabels, Gauge>::default();
        registry.register("items", "Items that reached a state, by batch type and outcome", items.clone());
        registry.register(
            "item_duration_seconds",
            "Time from claiming an item to its final status",
            durations.clone(),
        );
        registry.register("batches", "Batches in the database, by status", batches.clone());
        Arc::new(Metrics { registry, items, durations, batches })
    }

    /// Counts one item outcome (`completed`, `failed`, `skipped`, or `retry` for an attempt that
    /// will be retried) and its duration.
    pub fn record_item(&self, batch_type: &str, outcome: &str, seconds: f64) {
        self.items
            .get_or_create(&ItemLabels { batch_type: batch_type.to_owned(), outcome: outcome.to_owned() })
            .inc();
        self.durations.get_or_create(&TypeLabels { batch_type: batch_type.to_owned() }).observe(seconds);
    }

    /// The text exposition, with the batch gauges refreshed from the database.
    pub async fn render(&self, pool: &PgPool) -> String {
        if let Ok(mut conn) = pool.acquire().await
            && let Ok(counts) = batches::count_by_status(&mut conn).await
        {
            for status in BatchStatus::ALL {
                let n = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
                self.batches.get_or_create(&StatusLabels { status: status.as_str().to_owned() }).set(n);
            }
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped. Deliberately minimal: one
/// request per connection, no keep-alive, anything but `/metrics` is a 404.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, pool: PgPool) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { continue };
        let metrics = Arc::clone(&metrics);
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut request = vec![0_u8; 4096];
            let n = socket.read(&mut request).await.unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..n]);
            let response = if line.starts_with("GET /metrics ") || line.starts_with("GET /metrics?") {
                let body = metrics.render(&pool).await;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            };
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}
