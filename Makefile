# Ferry's one task runner: CI calls `make test` through .ci/run.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

include crates/testenv/versions.env

FERRY_CACHE ?= $(HOME)/.cache/ferry
export FERRY_CACHE
# kubectl is the machine's own when it has one; otherwise scripts/build-testenv.sh
# builds it here, from the same Kubernetes release as the test clusters.
export PATH := $(PATH):$(FERRY_CACHE)/testenv/kube-$(KUBE_VERSION)/kubectl:$(FERRY_CACHE)/testenv/helm-$(HELM_VERSION)/bin
CARGO ?= cargo
DEV_DIR ?= .ferry-dev

.PHONY: image all build test check-tools testenv fmt-check clippy test-only dev-up dev-down demo clean-cache bench-objects bench-peers bench-datamover bench-migrate

all: build

build:
	$(CARGO) build --workspace --all-targets

## testenv: install the Debian packages real nodes need, build etcd, Kubernetes (control
## plane and node), MinIO, CoreDNS, local-path-provisioner, crictl, the CSI sidecars and
## snapshot-controller (with the snapshot CRDs) and the CSI hostpath driver from their Go
## modules into $(FERRY_CACHE)/testenv, and the nodes' images into $(FERRY_CACHE)/images
## (once; cached by version).
testenv:
	bash scripts/build-testenv.sh all
	bash scripts/build-images.sh all

check-tools:
	@command -v go >/dev/null || { echo "Go is needed to build the test clusters (Go 1.25+)"; exit 1; }
	@command -v setpriv >/dev/null || { echo "setpriv (util-linux) is needed: apt-get install util-linux"; exit 1; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || { echo "rustfmt is needed: rustup component add rustfmt"; exit 1; }
	@$(CARGO) clippy --version >/dev/null 2>&1 || { echo "clippy is needed: rustup component add clippy"; exit 1; }

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-only:
	$(CARGO) test --workspace --no-fail-fast

## test: the one test command: builds what it needs, then fmt, clippy and every test.
test: check-tools testenv fmt-check clippy test-only

## dev-up: clusters `a` and `b` and the S3 server, left running; kubeconfig in
## $(DEV_DIR)/kubeconfig, S3 settings in $(DEV_DIR)/s3.env.
dev-up: check-tools testenv
	$(CARGO) run --quiet -p ferry-testenv -- up --dir $(DEV_DIR)

dev-down:
	$(CARGO) run --quiet -p ferry-testenv -- down --dir $(DEV_DIR)

# Release builds record their commit, which `ferry version` and GetVersion report.
RELEASE_ENV = FERRY_GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null)

## demo: the main job end to end: two local clusters with nodes and S3, Ferry's image
## and chart installed on each, a running StatefulSet with >= 1 GiB of data on a, pair,
## migrate to b, the application's own check on b, every byte compared.
demo: check-tools testenv
	$(RELEASE_ENV) $(CARGO) build --release --quiet -p ferry-cli --bin ferry -p ferry-testenv --bin ferry-testenv
	FERRY_BIN_DIR=$${CARGO_TARGET_DIR:-target}/release bash scripts/demo.sh

## bench-migrate: a warm migration of the demo's application with a 1 GiB volume on
## clusters with nodes: first sync, each re-sync after 1% changed, the cutover's
## downtime, and the ratio to the data mover alone; last line is one `summary:` line.
bench-migrate: check-tools testenv
	$(RELEASE_ENV) $(CARGO) build --release --quiet -p ferry-cli --bin ferry -p ferry-testenv --bin ferry-testenv
	FERRY_BIN_DIR=$${CARGO_TARGET_DIR:-target}/release bash scripts/bench-migrate.sh

## image: Ferry's container image from the release binary, without Docker:
## $(FERRY_CACHE)/images/ferry-<version>.tar (ferry.local/ferry:<version>), which the test
## clusters' nodes import. Prints its size.
image:
	$(RELEASE_ENV) $(CARGO) build --release --quiet -p ferry-cli --bin ferry
	FERRY_BIN=$${CARGO_TARGET_DIR:-target}/release/ferry bash scripts/build-images.sh ferry

clean-cache:
	rm -rf $(FERRY_CACHE)/testenv $(FERRY_CACHE)/gobuild

## bench-objects: capture 1,000 objects on cluster a and apply them to b (real API
## servers); last line is one `summary:` line.
bench-objects: check-tools testenv
	$(CARGO) run --release --quiet -p ferry-bench --bin bench-objects

## bench-peers: install restic, rustic and kopia (pinned in bench/peers.env) into
## $(FERRY_CACHE)/bench (once; cached by version; kopia is optional).
bench-peers:
	bash bench/install-peers.sh all

## bench-datamover: Ferry's data mover against restic, rustic and kopia on ~1.2 GiB of
## generated data, to a local directory and to S3 (FERRY_BENCH_SCALE scales it); last
## line is one `summary:` line.
bench-datamover: check-tools testenv bench-peers
	$(CARGO) build --release --quiet -p ferry-cli --bin ferry
	$(CARGO) run --release --quiet -p ferry-bench --bin bench-datamover
