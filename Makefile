# sdx: one entry point. `make help` lists the targets.
# The privileged targets (demo, test, bench) need root: they build network
# namespaces, veth pairs, XDP programs and AF_XDP sockets.

GO      ?= go
TIMEOUT ?= 13m
BENCHTIME ?= 1s
TAGS    := sdxdebug

.DEFAULT_GOAL := help
.PHONY: help deps build demo test test-unit bench generate gen-check fmt vet clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install what the build, tests and demo need (Debian, as root)
	@scripts/install-deps.sh

build: ## build the binaries into bin/
	$(GO) build -o bin/ ./cmd/...

demo: deps build ## sdxbench -quick: sdx beside kernel TCP/UDP and the raw AF_XDP floor on a built-in veth testbed
	bin/sdxbench -quick

demo-frames: deps build ## the data path alone: AF_XDP frames both ways over a veth testbed, with every counter
	bin/sdx demo

test: deps fmt vet gen-check ## the whole suite: unit, eBPF, veth integration, -race; brief benchmarks
	@scripts/run-tests.sh -race -tags $(TAGS) -timeout $(TIMEOUT) -count=1 ./...
	$(GO) test -run '^$$' -bench . -benchtime 100x -timeout 5m ./...

test-unit: ## the tests that need no root
	$(GO) test -race -short ./ring/...

bench: deps ## the benchmarks (BENCHTIME=1s by default)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -timeout 30m ./...

generate: ## rebuild the eBPF objects with the pinned clang-14
	$(GO) generate ./bpf

gen-check: ## fail when the committed eBPF objects no longer match their C source
	@scripts/gen-check.sh

fmt: ## fail on unformatted Go files
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet: ## go vet
	$(GO) vet ./...
	$(GO) vet -tags $(TAGS) ./...

clean: ## remove build output
	rm -rf bin
