# kindling: `make demo` and `make test` are all a user types; each runs `setup` first.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
# A current Node lives in .tools when the system one is too old (scripts/install-node.sh).
export PATH := $(CURDIR)/.tools/node/bin:$(PATH)

SOURCES := $(shell find provider sdk test bench -name '*.ts' 2>/dev/null)

.PHONY: setup deps node modules build demo test bench clean

setup: deps node modules build

deps:
	@scripts/install-debs.sh

node: deps
	@scripts/install-node.sh >/dev/null

# npm ci only when the lock file changed since the last install.
node_modules/.package-lock.json: package.json package-lock.json | node
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

modules: node_modules/.package-lock.json

dist/.built: $(SOURCES) tsconfig.json node_modules/.package-lock.json
	npx tsc -p tsconfig.json
	@touch $@

build: dist/.built

demo: setup
	@scripts/demo.sh

test: setup
	node --test --test-concurrency=1 --test-reporter=spec 'dist/test/**/*.test.js'

bench: setup
	node dist/bench/snapshot-clone.js

clean:
	rm -rf dist node_modules .tools
