SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

# Everything runs from the project's virtual environment (`make venv` creates it).
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
BUF := $(BIN)/buf
# The git revision `make breaking` compares the contract against.
BREAKING_AGAINST ?= main

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# The virtual environment, rebuilt when the pins change.
STAMP := $(VENV)/.installed
$(STAMP): requirements-dev.txt pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt -e '.[grpc,nats]'
	touch $@

# Debian's toolchains for the cross-language tests: protoc (the descriptor set, and
# every consumer), Go with protobuf and gRPC, Java with protobuf-java.
# NOTE: golang-github-golang-protobuf-1-5-dev: grpc-go's default shim (1.3) panics
# marshalling oneofs.
# NOTE: libprotobuf-dev holds google/protobuf/*.proto for `protoc -I` (only a Recommends
# of protobuf-compiler) and the C++ headers.
DEBIAN_PACKAGES := protobuf-compiler libprotobuf-dev g++ \
  golang-go golang-google-protobuf-dev protoc-gen-go golang-google-genproto-dev \
  golang-google-grpc-dev protoc-gen-go-grpc golang-github-golang-protobuf-1-5-dev \
  openjdk-17-jdk-headless libprotobuf-java libgoogle-gson-java libguava-java chromium

.PHONY: toolchains
toolchains: ## Install the Debian packages the cross-language tests need (apt-get; root or sudo)
	tools/install_debian_packages.sh $(DEBIAN_PACKAGES)

.PHONY: venv
venv: $(STAMP) ## Create .venv with the pinned toolchain and the package (editable)

.PHONY: serve
serve: $(STAMP) ## Run the EventService (SQLite store in ./pipeline-events.db)
	$(BIN)/pipeline-events serve

.PHONY: protovalidate
protovalidate: $(STAMP) ## Derive buf/validate/validate.proto from the installed protovalidate wheel
	$(PYTHON) tools/protovalidate_proto.py --out-dir build/protovalidate

.PHONY: generate
generate: $(STAMP) ## Regenerate generated/ from proto/
	$(PYTHON) tools/generate.py

.PHONY: bundle
bundle: generate ## Write the schema bundle for protoc users: build/pipeline-events-schema-VERSION{/,.tar.gz}
	$(PYTHON) tools/bundle.py --out build

.PHONY: check-generated
check-generated: generate ## Fail if generated/ is not what proto/ produces
	@if [ -n "$$(git status --porcelain -- generated)" ]; then \
	  git status --porcelain -- generated; \
	  echo "generated/ is out of date: run 'make generate' and commit the result"; exit 1; \
	fi

.PHONY: lint
lint: protovalidate ## ruff, buf lint, buf format
	$(BIN)/ruff check src tests tools bench
	$(BIN)/ruff format --check src tests tools bench
	$(BUF) lint
	$(BUF) format --diff --exit-code proto

.PHONY: breaking
breaking: protovalidate ## buf breaking against $(BREAKING_AGAINST) (FILE rules)
	rm -rf build/against && mkdir -p build/against/build
	git archive $(BREAKING_AGAINST) buf.yaml proto | tar -x -C build/against
	cp -r build/protovalidate build/against/build/
	$(BUF) build build/against -o build/against.binpb
	$(BUF) breaking proto --against build/against.binpb

.PHONY: test
test: $(STAMP) toolchains ## Run the test suite (Python, Node.js, Go, Java)
	$(PYTHON) -m pytest

.PHONY: bench
bench: $(STAMP) ## The benchmarks that matter, ~6 min: the service beside its limits (one table of goals), consumer groups, codecs, validation, store, state queries, NATS, bad-token bursts
	$(PYTHON) bench/service.py
	$(PYTHON) bench/groups.py --quick
	$(PYTHON) bench/codecs.py
	$(PYTHON) bench/validation.py
	$(PYTHON) bench/store.py --durability process --full-log-events 100000 --repeats 1
	$(PYTHON) bench/state_queries.py --quick
	$(PYTHON) bench/nats.py --quick
	$(PYTHON) bench/auth_flood.py --quick

.PHONY: bench-full
bench-full: $(STAMP) ## Every benchmark at full size (~30 min; store vs eventsourcing ~20 min of it)
	$(PYTHON) bench/service.py
	$(PYTHON) bench/groups.py
	$(PYTHON) bench/codecs.py
	$(PYTHON) bench/validation.py
	$(PYTHON) bench/projections.py
	$(PYTHON) bench/state_queries.py
	$(PYTHON) bench/store.py --durability both
	$(PYTHON) bench/nats.py
	$(PYTHON) bench/auth_flood.py

.PHONY: check
check: lint breaking check-generated test ## Everything CI checks
