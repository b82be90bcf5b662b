//! Where the tests find PostgreSQL, NATS and Redis.
//!
//! From `SWITCHYARD_TEST_PG_ADMIN_URL`, `SWITCHYARD_TEST_NATS_US_URL`,
//! `SWITCHYARD_TEST_NATS_EU_URL` and `SWITCHYARD_TEST_REDIS_URL` when set; otherwise from the
//! local stack's `.local/stack.env` (`make test` starts its infrastructure when it is not
//! running). The two NATS URLs are two servers, one JetStream domain per region, joined by a
//! leafnode — as in production.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Clone, Debug)]
pub struct TestEnv {
    pub pg_admin_url: String,
    pub nats_us_url: String,
    pub nats_eu_url: String,
    pub redis_url: String,
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn stack_env() -> HashMap<String, String> {
    let path = workspace_root().join(".local/stack.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} not found: run the tests with `make test` (it starts PostgreSQL, NATS and Redis), \
             run `make up`, or set SWITCHYARD_TEST_* URLs",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

impl TestEnv {
    pub fn get() -> &'static TestEnv {
        static ENV: OnceLock<TestEnv> = OnceLock::new();
        ENV.get_or_init(|| {
            let from = |var: &str, key: &str, stack: &mut Option<HashMap<String, String>>| {
                std::env::var(var).ok().unwrap_or_else(|| {
                    let s = stack.get_or_insert_with(stack_env);
                    s.get(key)
                        .cloned()
                        .unwrap_or_else(|| panic!("{key} missing from .local/stack.env"))
                })
            };
            let mut stack = None;
            TestEnv {
                pg_admin_url: from("SWITCHYARD_TEST_PG_ADMIN_URL", "PG_ADMIN_URL", &mut stack),
                nats_us_url: from("SWITCHYARD_TEST_NATS_US_URL", "NATS_US_URL", &mut stack),
                nats_eu_url: from("SWITCHYARD_TEST_NATS_EU_URL", "NATS_EU_URL", &mut stack),
                redis_url: from("SWITCHYARD_TEST_REDIS_URL", "REDIS_URL", &mut stack),
            }
        })
    }

    /// The URL of database `name` on the test PostgreSQL server.
    pub fn db_url(&self, name: &str) -> String {
        let base = self
            .pg_admin_url
            .rsplit_once('/')
            .map_or(self.pg_admin_url.as_str(), |(b, _)| b);
        format!("{base}/{name}")
    }
}
