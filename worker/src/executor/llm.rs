//! The `llm` executor: asks an OpenAI-compatible chat endpoint (`POST /chat/completions`)
//! about the job's issue or pull request and returns the answer, with the tokens it used.
//!
//! Calls have a timeout; transient failures (429, 5xx, network) are retried with jittered
//! backoff, and a circuit breaker stops calling an endpoint that keeps failing, so a broken
//! provider costs the pool seconds, not its slots.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use protocol::JobSpec;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::{ExecError, Output};

const ATTEMPTS: u32 = 3;
const BREAKER_THRESHOLD: u32 = 5;
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct LlmExecutor {
    base_url: String,
    model: String,
    api_key: Option<SecretString>,
    max_tokens: u32,
    system_prompt: String,
    http: reqwest::Client,
    breaker: Mutex<(u32, Option<Instant>)>,
}

#[derive(Debug, Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: i64,
    #[serde(default)]
    completion_tokens: i64,
    #[serde(default)]
    total_tokens: i64,
}

/// What the model is asked about a job.
pub fn prompt(spec: &JobSpec) -> String {
    let mut p = format!(
        "Event: {} {}\n",
        spec.event,
        spec.action.as_deref().unwrap_or_default()
    );
    if let Some(repo) = &spec.repo {
        p.push_str(&format!("Repository: {repo}\n"));
    }
    if let Some(t) = &spec.target {
        p.push_str(&format!(
            "#{} {}\n{}\n\n{}\n",
            t.number, t.title, t.url, t.body
        ));
    }
    if let Some(trigger) = &spec.trigger {
        p.push_str(&format!("\nAsked with: {trigger}\n"));
    }
    p
}

impl LlmExecutor {
    pub fn new(
        base_url: String,
        model: String,
        api_key: Option<SecretString>,
        timeout: Duration,
        max_tokens: u32,
        system_prompt: String,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("a client with a timeout builds");
        Self {
            base_url,
            model,
            api_key,
            max_tokens,
            system_prompt,
            http,
            breaker: Mutex::new((0, None)),
        }
    }

    fn breaker_open(&self) -> bool {
        self.breaker
            .lock()
            .ok()
            .and_then(|b| b.1)
            .is_some_and(|until| Instant::now() < until)
    }

    fn record(&self, ok: bool) {
        if let Ok(mut b) = self.breaker.lock() {
            if ok {
                *b = (0, None);
            } else {
                b.0 += 1;
                if b.0 >= BREAKER_THRESHOLD {
                    b.1 = Some(Instant::now() + BREAKER_OPEN_FOR);
                }
            }
        }
    }

    pub async fn run(&self, spec: &JobSpec) -> Result<Output, ExecError> {
        let body = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt(spec)},
            ],
        });
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        let mut delay = Duration::from_millis(250);
        let mut last = ExecError::Transient("no attempt made".into());
        for attempt in 1..=ATTEMPTS {
            if self.breaker_open() {
                return Err(ExecError::Transient(
                    "the LLM endpoint keeps failing; circuit open".into(),
                ));
            }
            let mut req = self.http.post(&url).json(&body);
            if let Some(key) = &self.api_key {
                req = req.bearer_auth(key.expose_secret());
            }
            let result = match req.send().await {
                Err(e) => Err(ExecError::Transient(format!(
                    "the LLM endpoint did not answer: {e}"
                ))),
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        match resp.json::<Completion>().await {
                            Ok(c) => Ok(c),
                            Err(e) => Err(ExecError::Permanent(format!(
                                "unreadable answer from the LLM endpoint: {e}"
                            ))),
                        }
                    } else if status.as_u16() == 429 || status.is_server_error() {
                        Err(ExecError::Transient(format!(
                            "the LLM endpoint answered {status}"
                        )))
                    } else {
                        Err(ExecError::Permanent(format!(
                            "the LLM endpoint refused: {status}"
                        )))
                    }
                }
            };
            self.record(!matches!(result, Err(ExecError::Transient(_))));
            match result {
                Ok(c) => {
                    let answer = c
                        .choices
                        .into_iter()
                        .find_map(|ch| ch.message.content)
                        .ok_or_else(|| {
                            ExecError::Permanent("the LLM endpoint answered no message".into())
                        })?;
                    let tokens = c.usage.as_ref().map(|u| u.total_tokens);
                    return Ok(Output {
                        result: json!({"answer": answer, "model": self.model, "usage": c.usage}),
                        comment: answer,
                        llm_tokens: tokens,
                    });
                }
                Err(ExecError::Transient(e)) if attempt < ATTEMPTS => {
                    last = ExecError::Transient(e);
                    let jitter = rand::rng().random_range(0.5..1.5);
                    tokio::time::sleep(delay.mul_f64(jitter)).await;
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}
