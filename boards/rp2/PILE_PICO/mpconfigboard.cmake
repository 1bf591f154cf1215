# The pile controller on a Raspberry Pi Pico (RP2040): the firmware frozen into the image.
# boards/rp2/README.md says why and how to build it.
set(PICO_BOARD "pico")
set(PICO_PLATFORM "rp2040")
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
# The Pico's pin names (LED, GP0..): the stock board's table.
set(MICROPY_BOARD_PINS ${MICROPY_PORT_DIR}/boards/RPI_PICO/pins.csv)
