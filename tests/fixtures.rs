//! GitHub's own webhook payloads, from npm `@octokit/webhooks-examples`, and GitHub's REST
//! description, from npm `@octokit/openapi` (both installed under `tests/fixtures/node_modules`
//! by `make test`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::env::workspace_root;

#[derive(Clone, Debug, Deserialize)]
pub struct EventExamples {
    pub name: String,
    pub examples: Vec<serde_json::Value>,
}

pub fn examples_path() -> PathBuf {
    workspace_root()
        .join("tests/fixtures/node_modules/@octokit/webhooks-examples/api.github.com/index.json")
}

/// Every example payload, by event name (read and parsed once per test process).
pub fn all_examples() -> Vec<EventExamples> {
    cached().to_vec()
}

fn cached() -> &'static [EventExamples] {
    static ALL: std::sync::OnceLock<Vec<EventExamples>> = std::sync::OnceLock::new();
    ALL.get_or_init(read_examples)
}

fn read_examples() -> Vec<EventExamples> {
    let path = examples_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} not found: run `npm ci --prefix tests/fixtures` (make test does)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("webhooks-examples index.json parses")
}

/// The first example of `event` whose `action` is `action` (or the first at all).
pub fn example(event: &str, action: Option<&str>) -> serde_json::Value {
    cached()
        .iter()
        .find(|e| e.name == event)
        .and_then(|e| {
            e.examples.iter().find(|p| {
                action.is_none_or(|a| p.get("action").and_then(|v| v.as_str()) == Some(a))
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("no example of {event} {action:?}"))
}

/// GitHub's REST description of api.github.com (OpenAPI 3.0), with its `$ref`s in place: the
/// dereferenced variant of the package is five times larger, and parsing it costs more memory
/// than following the few references a test needs.
pub fn rest_description_path() -> PathBuf {
    workspace_root()
        .join("tests/fixtures/node_modules/@octokit/openapi/generated/api.github.com.json")
}

/// GitHub's REST description (read and parsed once per test process).
pub fn rest_description() -> &'static serde_json::Value {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let path = rest_description_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "{} not found: run `npm ci --prefix tests/fixtures` (make test does)",
                path.display()
            )
        });
        serde_json::from_str(&text).expect("the REST description parses")
    })
}
