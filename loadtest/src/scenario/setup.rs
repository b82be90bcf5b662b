//! What a scenario sets up through the API before it starts: an org (operator token), its
//! GitHub App installation, and an access token for the owner's key — the same calls an org
//! admin makes, so that the run meets the state a real org has.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::json;

/// The org a scenario runs as.
#[derive(Clone, Debug)]
pub struct OrgFixture {
    pub org_id: i64,
    pub slug: String,
    /// The owner's API key.
    pub api_key: String,
    pub installation_id: i64,
}

/// The setup calls, on a plain HTTP client (not the measured connection pool).
#[derive(Clone, Debug)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

#[derive(Deserialize)]
struct CreatedOrg {
    id: i64,
    api_key: Option<String>,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

async fn expect(resp: reqwest::Response, want: u16, what: &str) -> anyhow::Result<String> {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    if status != want {
        bail!("{what}: expected {want}, got {status}: {body}");
    }
    Ok(body)
}

impl Api {
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the setup HTTP client")?;
        Ok(Self {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// `POST /v1/orgs` as the operator; the org id and the owner's API key.
    pub async fn create_org(
        &self,
        operator_token: &str,
        slug: &str,
        region: &str,
    ) -> anyhow::Result<(i64, String)> {
        let resp = self
            .client
            .post(format!("{}/v1/orgs", self.base))
            .bearer_auth(operator_token)
            .json(&json!({
                "slug": slug,
                "name": format!("Load test {slug}"),
                "region": region,
                "plan": "enterprise",
                "owner_email": format!("owner@{slug}.loadtest.example"),
            }))
            .send()
            .await
            .with_context(|| format!("POST {}/v1/orgs", self.base))?;
        let body = expect(resp, 201, "creating the load-test org").await?;
        let org: CreatedOrg = serde_json::from_str(&body).context("reading the created org")?;
        let key = org.api_key.context("the created org carries no api_key")?;
        Ok((org.id, key))
    }

    /// `POST /v1/orgs/{org}/github/installations` with the owner's key.
    pub async fn bind_installation(
        &self,
        api_key: &str,
        org: i64,
        installation_id: i64,
    ) -> anyhow::Result<()> {
        let resp = self
            .client
            .post(format!("{}/v1/orgs/{org}/github/installations", self.base))
            .bearer_auth(api_key)
            .json(&json!({ "installation_id": installation_id }))
            .send()
            .await
            .context("binding the installation")?;
        expect(resp, 201, "binding the installation").await?;
        Ok(())
    }

    /// `POST /v1/auth/token`: an access token (JWT) for `api_key`.
    pub async fn access_token(&self, api_key: &str) -> anyhow::Result<String> {
        let resp = self
            .client
            .post(format!("{}/v1/auth/token", self.base))
            .json(&json!({ "api_key": api_key }))
            .send()
            .await
            .context("exchanging the API key for a token")?;
        let body = expect(resp, 200, "exchanging the API key for a token").await?;
        Ok(serde_json::from_str::<Token>(&body)
            .context("reading the token")?
            .access_token)
    }

    /// An org of its own with a freshly bound installation.
    pub async fn org_fixture(
        &self,
        operator_token: &str,
        run_id: &str,
        region: &str,
    ) -> anyhow::Result<OrgFixture> {
        let slug = format!("lt-{run_id}");
        let (org_id, api_key) = self.create_org(operator_token, &slug, region).await?;
        // GitHub's installation ids are positive 64-bit numbers; one per run keeps runs
        // apart (an installation belongs to one org).
        let installation_id = rand::random_range(1_000_000_000_i64..1_000_000_000_000);
        self.bind_installation(&api_key, org_id, installation_id)
            .await?;
        Ok(OrgFixture {
            org_id,
            slug,
            api_key,
            installation_id,
        })
    }
}
