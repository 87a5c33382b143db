# kindling: `make demo` and `make test` are all a user types; each runs `setup` first.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
# A current Node lives in .tools when the system one is too old (scripts/install-node.sh).
export PATH := $(CURDIR)/.tools/node/bin:$(PATH)

SOURCES := $(shell find provider sdk test bench -name '*.ts' 2>/dev/null)

.PHONY: setup deps node modules build engine examples schema demo demo-down tour test soak bench clean

setup: deps node modules build engine examples

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

# The NBD server's native data path (provider/nbd/native), against Node-API's headers from npm
# (a system Node may come without its own; Node-API modules load in any later Node).
# One module of several files, one job each: the protocol (transmission.c) and the devices it
# serves from (file.c; rbd.c, which loads librbd at run time: no Ceph package is needed to build).
NATIVE_SOURCES := $(wildcard provider/nbd/native/*.c)
dist/native/nbd-transmission.node: $(NATIVE_SOURCES) provider/nbd/native/device.h node_modules/.package-lock.json
	@mkdir -p dist/native
	gcc -O2 -Wall -Wextra -shared -fPIC -pthread -Inode_modules/node-api-headers/include -o $@ $(NATIVE_SOURCES) -ldl

build: dist/.built dist/native/nbd-transmission.node

# The Pulumi engine: a recent `pulumi` on PATH, or one built once from Go modules and cached.
engine: modules
	@scripts/engine.sh >/dev/null

# schema.json is generated from the zod input schemas; test/schema.test.ts checks they agree.
schema: build
	node dist/provider/pulumi/schema.js > schema.json

# Examples resolve `kindling` to this checkout.
examples:
	@for d in examples/*/; do mkdir -p "$$d/node_modules" && ln -sfn ../../.. "$$d/node_modules/kindling"; done

demo: setup
	@scripts/demo.sh

demo-down: setup
	@scripts/demo.sh down

# The same story through the kindling command instead of Pulumi.
tour: setup
	@scripts/tour.sh

test: setup
	node --test --test-concurrency=1 --test-timeout=300000 --test-reporter=spec 'dist/test/**/*.test.js'

# The multi-process soak of `make test` (random operations, random kill -9s), for five minutes.
soak: setup
	KINDLING_SOAK_SECONDS=$${KINDLING_SOAK_SECONDS:-300} node --test --test-timeout=0 --test-reporter=spec dist/test/soak.test.js

bench: setup
	node dist/bench/snapshot-clone.js
	node dist/bench/pulumi-vs-library.js
	node dist/bench/records.js
	node dist/bench/persistence.js
	node dist/bench/rbd.js
	node dist/bench/object-store.js
	node dist/bench/object.js
	node dist/bench/images.js

clean:
	rm -rf dist node_modules .tools
