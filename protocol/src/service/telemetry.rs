//! Logs and traces.
//!
//! Logs go to stdout as JSON lines (or pretty text), each with the fields of its spans —
//! `request_id`, `org_id`, `trace_id` where known. Spans always get OpenTelemetry trace ids
//! (so logs and NATS messages carry them); they are exported over OTLP/HTTP only when
//! `telemetry.otlp_endpoint` is set. The trace context travels from intake to worker in NATS
//! headers ([`inject_nats`] / [`extract_nats`]).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::config::{LogFormat, TelemetryConfig};

/// Longest an export to the collector may take.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The OTLP HTTP client, run on the service's Tokio runtime: the SDK's batch processor
/// exports from a thread of its own, where the hyper client would find no reactor.
#[derive(Debug)]
struct OnRuntime {
    inner: std::sync::Arc<
        opentelemetry_http::hyper::HyperClient<hyper_util::client::legacy::connect::HttpConnector>,
    >,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let inner = self.inner.clone();
        self.runtime
            .spawn(async move { inner.send_bytes(request).await })
            .await?
    }
}

/// Keeps the trace exporter alive; flushes it when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Flushing can only fail when the collector is unreachable; nothing else to do then.
        let _ = self.provider.shutdown();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Installs the process's log and trace pipeline; call it inside the service's Tokio
/// runtime. A second call (several apps in one test
/// process) keeps the first pipeline and returns a guard for a fresh, unexported provider.
pub fn init(
    cfg: &TelemetryConfig,
    service: &'static str,
) -> Result<TelemetryGuard, TelemetryError> {
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.trace_sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        );
    if let Some(endpoint) = &cfg.otlp_endpoint {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let client = OnRuntime {
            inner: std::sync::Arc::new(
                opentelemetry_http::hyper::HyperClient::with_default_connector(
                    EXPORT_TIMEOUT,
                    None,
                ),
            ),
            runtime: tokio::runtime::Handle::current(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));

    let filter = EnvFilter::builder().parse(&cfg.log_filter)?;
    let fmt = match cfg.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };
    // `try_init` fails only when a pipeline is already installed (tests start many apps).
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt)
        .try_init();
    Ok(TelemetryGuard { provider })
}

/// The trace id of the current span, when it has one.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct NatsHeaders<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsHeadersRef<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Writes the current span's trace context (`traceparent`) into NATS headers.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut NatsHeaders(headers));
}

/// Makes `span` a child of the trace context carried in NATS headers, if any.
pub fn extract_nats(headers: Option<&async_nats::HeaderMap>, span: &tracing::Span) {
    if let Some(h) = headers {
        let cx = TraceContextPropagator::new().extract(&NatsHeadersRef(h));
        if cx.span().span_context().is_valid() {
            // Fails only if the span is already closed or has started its own trace.
            let _ = span.set_parent(cx);
        }
    }
}
