# Two commands for a newcomer: `make bench` (the main job) and `make test`.
# Both set up what they need: .venv with the pinned packages, the MicroPython
# port stubs, and socat (apt) when it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STUBS  := $(VENV)/stubs/esp32/.installed $(VENV)/stubs/rp2/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup socat test lint bench bench-perf clean

setup: $(STAMP) $(STUBS) socat

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Both stub packages define `machine`, so each port gets its own directory.
$(VENV)/stubs/%/.installed: $(STAMP)
	$(BIN)/pip install --quiet --target $(VENV)/stubs/$* micropython-$*-stubs==1.29.0.post1
	touch $@

socat:
	@command -v socat >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq socat; }

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .

# The main job: the virtual bench (ptys, simulated plant, firmware on MicroPython, host tool).
bench: setup
	$(BIN)/pilectl bench

# Speed and memory figures (see docs/performance.md).
bench-perf: setup
	MICROPYPATH=firmware $(BIN)/micropython bench/tick_bench.py
	MICROPYPATH=.frozen:firmware $(BIN)/micropython bench/protocol_bench.py
	$(BIN)/python bench/bus_bench.py

clean:
	rm -rf $(VENV) bench-out .pytest_cache .hypothesis .ruff_cache
