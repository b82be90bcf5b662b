//! `github-emulator`: the GitHub emulator as a process, for the local stack.
//!
//! `github-emulator --public-key FILE`, where FILE holds the App's public key (PEM);
//! the rest by environment: `EMULATOR_LISTEN` (default 127.0.0.1:18470), `EMULATOR_APP_ID`,
//! `EMULATOR_APP_SLUG`, `EMULATOR_WEBHOOK_URL`, `EMULATOR_SETUP_URL`,
//! `EMULATOR_WEBHOOK_SECRET`. It provisions any installation id on first use.

use switchyard_tests::emulator::{Emulator, EmulatorConfig};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = var("EMULATOR_LISTEN").unwrap_or_else(|| "127.0.0.1:18470".into());
    let args: Vec<String> = std::env::args().collect();
    let key_file = args
        .iter()
        .position(|a| a == "--public-key")
        .and_then(|i| args.get(i + 1).cloned())
        .ok_or_else(|| std::io::Error::other("usage: github-emulator --public-key FILE"))?;
    let cfg = EmulatorConfig {
        app_id: var("EMULATOR_APP_ID")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        app_slug: var("EMULATOR_APP_SLUG").unwrap_or_else(|| "switchyard".into()),
        app_public_key_pem: std::fs::read_to_string(&key_file)?,
        webhook_url: var("EMULATOR_WEBHOOK_URL"),
        webhook_secret: var("EMULATOR_WEBHOOK_SECRET").unwrap_or_default(),
        auto_provision: true,
        rate_limit: 5000,
        token_ttl_secs: 3600,
        base_url: format!("http://{listen}"),
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let emulator = Emulator::new(cfg);
    emulator
        .state
        .lock()
        .map_err(|_| std::io::Error::other("state lock"))?
        .setup_url = var("EMULATOR_SETUP_URL");
    emulator.serve(listener).await
}
