# Thin wrapper around CMake. `make run` and `make test` are all a new
# machine needs: both install missing Debian packages first.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all bootstrap build run test bench clean install package

all: build

bootstrap:
	./deploy/bootstrap.sh

build: bootstrap
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./deploy/run.sh $(BUILD)

test: build
	cd $(BUILD) && ctest --output-on-failure --no-tests=error -j 2 -LE bench

bench: build
	./tests/bench/run.sh $(BUILD)
	./tests/bench/run_query_engine.sh $(BUILD)
	./tests/bench/agent_all_bench.sh $(BUILD)

install: build
	cmake --install $(BUILD)

# Two .deb packages (strata-agent, strata-collector) in $(BUILD)/: cmake/packaging.cmake.
package: build
	cmake --build $(BUILD) --target package

clean:
	rm -rf $(BUILD) build-asan
