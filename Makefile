# Two commands for a newcomer: `make bench` (the main job) and `make test`.
# Both set up what they need: .venv with the packages pinned in constraints.txt, the
# MicroPython port stubs, socat, Mosquitto, Chromium and its driver (the live page's
# test), Node.js and the emulated ESP32's QEMU libraries (apt) when missing, and the
# emulated Pico's npm packages (host_tools/pico,
# npm ci).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STUBS  := $(VENV)/stubs/esp32/.installed $(VENV)/stubs/rp2/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PICO   := host_tools/pico
PICO_MODULES := $(PICO)/node_modules/.package-lock.json

.PHONY: setup socat mosquitto chromium screenshots qemu-libs node arm-gcc firmware-rp2 test test-rabbitmq lint bench bench-perf bench-latency bench-frequency bench-heap bench-romfs bench-deploy bench-flood bench-fleet bench-live bench-fleet-mqtt bench-mqtt bench-update bench-rp2 bench-site bench-boot-heap soak deploy hil hil-rp2 clean

setup: $(STAMP) $(STUBS) socat mosquitto chromium qemu-libs $(PICO_MODULES)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# Both stub packages define `machine`, so each port gets its own directory.
$(VENV)/stubs/%/.installed: | $(STAMP)
	$(BIN)/pip install --quiet --target $(VENV)/stubs/$* micropython-$*-stubs==1.29.0.post1
	touch $@

socat:
	@command -v socat >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq socat; }

# The MQTT broker the broker tests and benches start on 127.0.0.1 (pilectl/aggregator/broker.py);
# the Debian package's own service is not used.
mosquitto:
	@command -v mosquitto >/dev/null && command -v mosquitto_passwd >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto; }

# Debian's headless browser and its WebDriver, for the live fleet page's test
# (tests/test_live_page.py drives them with selenium; no browser download).
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; }

# What the Wi-Fi QEMU of ../shared/esp32 needs at run time (pilectl.esp32, docs/esp32.md).
ESP32_LIBS := libglib2.0-0 libpixman-1-0 libslirp0 libfdt1 libgcrypt20 libgnutls30 libpng16-16
qemu-libs:
	@dpkg -s $(ESP32_LIBS) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(ESP32_LIBS); }

node:
	@command -v node >/dev/null && command -v npm >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm; }

# The ARM cross-compiler for the production image, and the symbols of a build's .elf for
# the emulated Pico's profiler (pilectl.armprofile).
arm-gcc:
	@command -v arm-none-eabi-gcc >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi cmake; }

# The production image (boards/rp2/README.md): MicroPython with the firmware frozen in, to
# build/PILE_PICO/firmware.uf2 (and .elf). MICROPY_DIR: a MicroPython v1.28.0 checkout with
# its submodules; PICOTOOL_DIR: picotool 2.2.0's CMake package (lib/cmake/picotool).
firmware-rp2: arm-gcc
	@test -d "$(MICROPY_DIR)/ports/rp2" || { echo "set MICROPY_DIR to a MicroPython v1.28.0 checkout with its submodules (boards/rp2/README.md)"; exit 2; }
	$(MAKE) -C $(MICROPY_DIR)/mpy-cross
	cmake -S $(MICROPY_DIR)/ports/rp2 -B build/PILE_PICO/cmake -DMICROPY_BOARD=PILE_PICO -DMICROPY_BOARD_DIR=$(CURDIR)/boards/rp2/PILE_PICO $(if $(PICOTOOL_DIR),-Dpicotool_DIR=$(PICOTOOL_DIR))
	$(MAKE) -C build/PILE_PICO/cmake
	cp build/PILE_PICO/cmake/firmware.uf2 build/PILE_PICO/cmake/firmware.elf build/PILE_PICO/

# rp2040js, pinned in package-lock.json, for the emulated Pico (host_tools/pico/pico.mjs).
$(PICO_MODULES): $(PICO)/package.json $(PICO)/package-lock.json | node
	cd $(PICO) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Two pytest workers (pytest-xdist): the emulated boards' tests one after another on one
# (tests/conftest.py), the rest shared; about 22 minutes here against 41 on one.
test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n 2 --dist loadgroup

# The broker tests again on RabbitMQ's MQTT plugin (a private node: about 10 s a start),
# to show the piles and workers need nothing of Mosquitto's own.
test-rabbitmq: setup
	@test -x /usr/lib/rabbitmq/bin/rabbitmq-server || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq rabbitmq-server; }
	PILE_BROKER=rabbitmq $(BIN)/pytest -q tests/test_broker.py

# The live fleet page's screenshots in docs/img (the browser test, writing them).
screenshots: setup
	PILE_SCREENSHOTS=docs/img $(BIN)/pytest -q tests/test_live_page.py

lint: setup
	$(BIN)/ruff check .

# The main job: the virtual bench (ptys, simulated plant, firmware on MicroPython, host tool).
bench: setup
	$(BIN)/pilectl bench

# The HIL suite against a real board: PORT is its USB link, BUS the USB-RS485 adapter
# wired to its Modbus port (the host runs the simulated plant there).
hil: setup
	@test -n "$(PORT)" -a -n "$(BUS)" || { echo "usage: make hil PORT=/dev/ttyACM0 BUS=/dev/ttyUSB0"; exit 2; }
	$(BIN)/pytest -q hil_tests --port $(PORT) --bus $(BUS)

# The HIL suite on an emulated Raspberry Pi Pico through a board's path: deploy over its
# USB serial, then `pytest hil_tests --port <its UART1 link> --bus <its UART0>`.
hil-rp2: setup
	$(BIN)/python hil_tests/run_rp2.py -q

# Put the firmware on a board over its USB REPL: BOARD names a file in boards/ (or a path).
deploy: setup
	@test -n "$(BOARD)" -a -n "$(PORT)" || { echo "usage: make deploy BOARD=esp32_devkitc PORT=/dev/ttyUSB0"; exit 2; }
	$(BIN)/pilectl deploy --board $$( [ -f "$(BOARD)" ] && echo "$(BOARD)" || echo "boards/$(BOARD).json" ) --port $(PORT)

# Speed and memory figures (see docs/performance.md).
bench-perf: setup
	MICROPYPATH=firmware $(BIN)/micropython bench/decide_bench.py
	MICROPYPATH=.frozen:firmware $(BIN)/micropython bench/protocol_bench.py
	$(BIN)/python bench/bus_bench.py
	MICROPYPATH=firmware:tests/mp $(BIN)/micropython bench/journal_bench.py

# Setpoint and safety-cut latency on the virtual bench, 200 trials each (about 5 minutes).
bench-latency: setup
	$(BIN)/python bench/latency_bench.py 200

# Frequency-watt: a 50.00 <-> 49.80 Hz step to the converter write with 90 % of the response.
bench-frequency: setup
	$(BIN)/python bench/frequency_bench.py $(or $(TRIALS),200)

# The smallest -X heapsize the firmware survives the evening scenario with (about 10 minutes).
bench-heap: setup
	$(BIN)/python bench/heap_bench.py 96 192

# Heap taken by importing the firmware from .mpy files and from a ROMFS image.
bench-romfs: setup
	$(BIN)/python bench/romfs_bench.py

# The evening scenario on an emulated Raspberry Pi Pico (rp2040js, the official rp2
# build in ../shared/rp2 or PICO_FIRMWARE): deploy over USB, plant on UART0, link on UART1.
bench-rp2: setup
	$(BIN)/pilectl bench --target rp2 --out bench-out/rp2 $(if $(ROMFS),--romfs) $(if $(FROZEN),--frozen)

# The control period while the serial link and a TCP client flood the pile (about 1 minute).
bench-flood: setup
	$(BIN)/python bench/flood_bench.py 15

# Fleet scale: one aggregator against 1,000 / 5,000 / 10,000 emulated piles (PILES=N: one
# size); one JSON line per size (about 5 minutes for the three).
bench-fleet: setup
	$(BIN)/python bench/fleet_bench.py $(PILES)

# What the live fleet page costs the aggregator: dispatch without and with a browser's
# stream, and the push's own time (PILES=N, 2,000 by default; about a minute).
bench-live: setup
	$(BIN)/python bench/live_bench.py $(PILES)

# What the broker link costs the pile: heap and memory without MQTT, on MQTT, on TLS.
bench-mqtt: setup
	$(BIN)/python bench/mqtt_heap_bench.py

# The fleet through Mosquitto: emulated piles and WORKERS aggregator processes sharing it
# (1,000/5,000/10,000 piles with 1 and 2 workers, or PILES=N WORKERS=K for one run).
bench-fleet-mqtt: setup
	$(BIN)/python bench/fleet_mqtt_bench.py $(if $(PILES),--piles $(PILES)) $(if $(WORKERS),--workers $(WORKERS))

# The soak: SOAK_MIN minutes (30 by default) of random setpoints, loads and every fault the
# bench makes, reboots and power cuts; series and PNG in bench-out/soak, one JSON line last.
# It fails on a violation, a crash, a damaged event log or the aggregator locked out.
SOAK_MIN ?= 30
soak: setup
	$(BIN)/python bench/soak.py $(SOAK_MIN) --out bench-out/soak

# A site group of real firmwares sharing one connection's export cap, 2 to 8 piles, and the
# same piles each alone (today's firmware): one JSON line (docs/site-group.md), about 4 minutes.
bench-site: setup
	$(BIN)/python bench/site_bench.py $(if $(PILES),--piles $(PILES))

# The heap the firmware leaves free once booted, a pile alone and a site member, at the
# 208 KB the soak ran in until the site groups (docs/site-group.md); SOURCE= another firmware tree to compare with.
bench-boot-heap: setup
	$(BIN)/python bench/boot_heap_bench.py $(if $(SOURCE),--source $(SOURCE))

# Field updates: the whole firmware over TCP to a unix-port pile (control period during
# it) and a hanging image rolled back, the same over the emulated Pico's serial link, and a
# rollout in waves to 1,000 emulated piles and one real firmware (about 8 minutes).
bench-update: setup
	$(BIN)/python bench/update_bench.py --pico --fleet $(or $(PILES),1000)

# Seconds and bytes of a first deploy and of a one-module redeploy (unix-port board on a pty).
bench-deploy: setup
	$(BIN)/python bench/deploy_bench.py

# The update signature's check, ECDSA P-256 (the firmware's) against Ed25519, on the
# emulated RP2040 and the unix port: time, longest slice between yields, heap, .mpy size;
# one JSON line last (about 5 minutes; the RP2040 part skips without the Pico image).
.PHONY: bench-signature
bench-signature: setup
	$(BIN)/python bench/signature_bench.py

clean:
	rm -rf $(VENV) bench-out .pytest_cache .hypothesis .ruff_cache $(PICO)/node_modules
