//! The HTTP framework's ceiling: an axum handler that reads the request body and answers
//! `202` with nothing else to do, served by the same server loop as every Switchyard service
//! (`protocol::service::serve::serve`: hyper HTTP/1.1, `TCP_NODELAY`, the same header
//! options). Whatever the intake does beyond reading a body costs rate below this.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::target::loopback_listen;

async fn accept(body: Bytes) -> StatusCode {
    drop(body);
    StatusCode::ACCEPTED
}

/// Answers `202` to a `POST` on any path.
pub fn router() -> Router {
    Router::new()
        .route("/", post(accept))
        .route("/{*path}", post(accept))
}

/// Serves the no-op router on `listen` (loopback only) until `shutdown`, or for at most
/// `lifetime`, so that a forgotten server stops by itself.
pub async fn serve(
    listen: SocketAddr,
    lifetime: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listen = loopback_listen(listen)?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(lifetime).await;
            shutdown.cancel();
        });
    }
    protocol::service::serve::serve(listener, router(), shutdown, Duration::from_secs(5)).await?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_answers_202_to_any_post_and_stops_after_its_lifetime() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(addr, Duration::from_secs(2), stop.clone()));
        let client = reqwest::Client::new();
        let mut status = None;
        for _ in 0..50 {
            if let Ok(r) = client
                .post(format!("http://{addr}/webhooks/github"))
                .body(vec![b'x'; 12 * 1024])
                .send()
                .await
            {
                status = Some(r.status().as_u16());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, Some(202));
        let r = server.await.unwrap();
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn it_refuses_to_listen_beyond_loopback() {
        let r = serve(
            "0.0.0.0:0".parse().unwrap(),
            Duration::from_secs(1),
            CancellationToken::new(),
        )
        .await;
        assert!(r.is_err());
    }
}
