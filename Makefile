# The index of commands. `make run` and `make test` each install what they need first.
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR):$(CURDIR)/services/issuer:$(CURDIR)/services/mailer:$(CURDIR)/services/sms-gateway:$(CURDIR)/services/access-portal:$(CURDIR)/services/secretariat:$(CURDIR)/services/hospital-gateway:$(CURDIR)/services/key-store:$(CURDIR)/tools:$(CURDIR)/tools/devinbox:$(CURDIR)/tools/devoidc

.PHONY: guide run test fast bootstrap unit contract integration e2e browser production bench bench-letter lock lint contracts prometheus-rule prometheus-series admin clean

run:            ## the whole system locally, with a sample convocation; prints the link to open
	scripts/bootstrap.sh
	$(PY) -m devstack.run

test:           ## the lint step and every test tier, side by side (docs/testing.md); what CI runs
	scripts/bootstrap.sh --with-browser
	$(PY) -m devstack.suite

fast:           ## the unit and contract tiers: no server, under a minute (plain `pytest` does the same)
	$(PY) -m pytest

bootstrap:
	scripts/bootstrap.sh --with-browser

unit:
	$(PY) -m pytest tests/unit
contract:
	$(PY) -m pytest tests/contract
integration:
	$(PY) -m pytest tests/integration
e2e:
	$(PY) -m pytest tests/e2e
browser:
	$(PY) -m pytest tests/browser
production:     ## the production-like tier: services as the production overlay configures them
	$(PY) -m pytest tests/production

bench:          ## throughput and latency of the chain, memory per service (prints figures)
	$(PY) -m devstack.bench

bench-letter:   ## time and memory of rendering one letter (tagged WeasyPrint next to the fpdf2 renderer before)
	$(PY) -m devstack.letterbench

prometheus-series: ## record deploy/prometheus/series.yml from a live end-to-end run (the promtool tests' label sets)
	RECORD_SERIES=1 $(PY) -m pytest tests/e2e -q

admin:          ## operator commands, e.g. make admin ARGS="dlq list" (convocations-admin, see docs/runbooks.md)
	$(PY) -m convocations_admin $(ARGS)

guide:          ## re-record the video guide (WebM, MP4, narration, captions, transcript) in the four languages
	$(PY) -m devstack.guide

contracts:      ## regenerate the AsyncAPI document and JSON Schemas from the models
	$(PY) -m devstack.contracts

prometheus-rule: ## regenerate the Kubernetes PrometheusRule from deploy/prometheus/alerts.yml and slo.yml
	$(PY) -m devstack.prometheus_rule

lock:           ## pin pyproject.toml's dependencies with hashes: requirements/dev.lock, runtime.lock and uv.lock
	.venv/bin/uv pip compile pyproject.toml --group dev --python-version 3.11 --generate-hashes --no-annotate \
	  --custom-compile-command "make lock" -o requirements/dev.lock --quiet
	.venv/bin/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes --no-annotate \
	  --custom-compile-command "make lock" -c requirements/dev.lock -o requirements/runtime.lock --quiet
	printf 'uv\n' | .venv/bin/uv pip compile - --python-version 3.11 --generate-hashes --no-annotate \
	  --custom-compile-command "make lock" -c requirements/dev.lock -o requirements/uv.lock --quiet

lint:           ## ruff check, ruff format --check and mypy: the lint step of `make test`
	$(PY) -m devstack.suite lint

clean:
	rm -rf .venv .pytest_cache .run
