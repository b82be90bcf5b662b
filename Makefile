# Switchyard — the two set-up commands are `make up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
STACK := deploy/local/stack.sh
export SQLX_OFFLINE := true

.PHONY: help up down status clean test lint fmt sqlx-prepare toolchain fixtures

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

toolchain: ## Install the build tools the workspace needs (mold) when missing
	@command -v mold >/dev/null 2>&1 || { \
	  echo "==> installing mold (the linker the workspace uses)"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "error: mold is missing and installing it needs root: sudo apt-get install -y mold" >&2; exit 1; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mold >/dev/null; }
	@command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
	@command -v npm >/dev/null 2>&1 || { echo "error: npm is missing (it fetches GitHub's webhook examples for the tests): apt-get install -y npm" >&2; exit 1; }

fixtures: tests/fixtures/node_modules/.package-lock.json ## GitHub's webhook examples and REST description for the tests (npm)

tests/fixtures/node_modules/.package-lock.json: tests/fixtures/package-lock.json
	npm ci --prefix tests/fixtures --no-audit --no-fund --silent

up: toolchain ## Install what is missing, build, start the whole local stack
	@bash $(STACK) up

down: ## Stop exactly what `make up` started
	@bash $(STACK) down

status: ## Show what of the local stack runs
	@bash $(STACK) status

clean: ## Stop the stack and remove .local/
	@bash $(STACK) clean

fmt: ## Format the code
	cargo fmt --all

lint: toolchain ## Formatting and clippy (warnings denied)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

test: lint fixtures ## Formatting, clippy, and every test (unit and integration) with nextest
	@bash $(STACK) with-infra -- bash deploy/local/run-tests.sh

sqlx-prepare: ## Regenerate .sqlx/ after changing a query (needs the local stack's PostgreSQL)
	@bash deploy/local/sqlx-prepare.sh

.PHONY: deploy-check
deploy-check: ## Offline checks of Dockerfiles, Helm chart, alerts, dashboards and Terraform (installs its tools once)
	@bash deploy/check/deploy-check.sh

.PHONY: bench
bench: toolchain fixtures ## Load-test the intake against its ceilings and Probot (3 runs, ~10 min), write docs/benchmarks.md
	@bash loadtest/bench.sh

.PHONY: bench-workers bench-tenancy
bench-workers: toolchain fixtures ## Webhook 202 → job running at 20/50/100 per s with a no-op executor, the worker's overhead per job (~4 min); a section of docs/benchmarks.md
	@bash loadtest/worker-bench.sh workers

bench-tenancy: toolchain fixtures ## The authorization decision (cargo bench) and authorized GET /v1/orgs/{org} at 200/s; a section of docs/benchmarks.md
	@bash loadtest/worker-bench.sh tenancy

.PHONY: bench-billing
bench-billing: toolchain ## 10,000,000 usage events for 100,000 orgs over 4 shards: ingest rate (record path, unnest, COPY), close-period time, year-long usage report (~12 min); a section of docs/benchmarks.md
	@bash loadtest/billing-bench.sh

.PHONY: bench-shards
bench-shards: toolchain ## 1,000,000 orgs over 4 shards: shard lookup per request, shard-map load, onboarding rate and placement (~10 min once built); a section of docs/benchmarks.md
	@bash loadtest/shard-bench.sh
