//! With `telemetry.otlp_endpoint` set, spans reach an OTLP/HTTP collector. (Its own test
//! binary: the log and trace pipeline is process-wide.)

#![cfg(feature = "service")]
#![allow(clippy::unwrap_used, reason = "test code")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use protocol::service::config::{LogFormat, TelemetryConfig};
use protocol::service::telemetry;

#[tokio::test(flavor = "multi_thread")]
async fn spans_are_exported_to_the_configured_collector() {
    let received: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let sink = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                sink.lock().unwrap().push((ct, body.len()));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let cfg = TelemetryConfig {
        log_format: LogFormat::Json,
        log_filter: "info".into(),
        otlp_endpoint: Some(format!("http://{addr}/v1/traces")),
        trace_sample_ratio: 1.0,
    };
    let guard = telemetry::init(&cfg, "otlp-test").unwrap();
    {
        let span = tracing::info_span!("exported-span", answer = 42);
        let _e = span.enter();
        assert!(
            telemetry::current_trace_id().is_some(),
            "spans carry trace ids"
        );
        tracing::info!("inside the span");
    }
    // Dropping the guard flushes the batch.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        if !received.lock().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no OTLP export arrived"
        );
    }
    let (ct, len) = received.lock().unwrap()[0].clone();
    assert_eq!(ct, "application/x-protobuf");
    assert!(len > 0);
}
