# ams — see README.md. The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
# AMS_STACK_DIR (e.g. a stack shared by several work trees) wins over the work tree's .stack.
STACK_DIR ?= $(or $(AMS_STACK_DIR),$(CURDIR)/.stack)
export AMS_STACK_DIR := $(STACK_DIR)
BIN := $(CURDIR)/bin/ams
# ams-dev: `make run`'s every-role-in-one-process binary (embedded Kafka, Redis, MQTT), kept out of ams.
DEV_BIN := $(CURDIR)/bin/ams-dev
# Integration tests share one stack and a 2-core box: one package at a time. Two at once let a
# heavy package (the ClickHouse cluster test: ZooKeeper and two servers) starve the pipeline
# tests' roles of CPU and turn their timeouts into failures.
TEST_FLAGS ?= -count=1 -timeout 20m -p 1
# The stack's client settings (brokers, TLS CA, SASL user and password file, Redis user and
# password file, ...): written by deploy/stack/up.sh, sourced by the targets that use the stack.
STACK_ENV = set -a && source "$(STACK_DIR)/env" && set +a &&

.PHONY: all build run run-stack test unit integration bench fuzz lint up tools down clean docs chdb

all: build

build:
	$(GO) build -o $(BIN) ./cmd/ams
	$(GO) build -o $(DEV_BIN) ./cmd/ams-dev

## run: every role in one process (`ams-dev`) on embedded Kafka, Redis and MQTT and a private
## ClickHouse, with RUN_DEVICES simulated devices and a live view; installs clickhouse-server if missing
RUN_DEVICES ?= 1000
run: build
	@command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || \
	  bash deploy/stack/up.sh --install-only clickhouse
	$(DEV_BIN) -devices $(RUN_DEVICES)

## run-stack: the whole pipeline as separate processes (one per role) against the local stack (make up)
run-stack: up build
	$(STACK_ENV) bash deploy/run.sh

## test: bring up the local stack (installing what is missing), then run unit and integration tests
test: up tools chdb lint
	$(STACK_ENV) $(GO) test $(TEST_FLAGS) -tags integration ./...

## unit: unit tests only (no services needed)
unit:
	$(GO) test -count=1 ./...

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

## fuzz: run every fuzz target for FUZZTIME each (default 60s)
FUZZTIME ?= 60s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; \
	done

## lint: gofmt, go vet and staticcheck (pinned; `go run` fetches it through the Go module proxy
## on a fresh machine). The only findings allowed are annotated with //lint:ignore at the use.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go'; git ls-files --others --exclude-standard '*.go')); \
	  if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags integration ./...

up:
	bash deploy/stack/up.sh

## tools: install the programs integration tests drive (nginx-rtmp, ffmpeg, ...), if missing
tools:
	bash deploy/stack/tools.sh

## chdb: the current ClickHouse engine (chdb-core, pinned) in a venv under .stack, for TestCurrentClickHouse
chdb:
	bash deploy/stack/chdb.sh

down:
	bash deploy/stack/down.sh

## docs: rewrite the README's configuration table from the flags
docs:
	AMS_UPDATE_README=1 $(GO) test -count=1 -run 'TestReadmeConfigTable|TestReadmeDevConfigTable' ./cmd/ams ./cmd/ams-dev

clean:
	rm -rf bin
