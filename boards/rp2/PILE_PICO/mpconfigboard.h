// The pile controller on a Raspberry Pi Pico: the stock RPI_PICO flash layout
//   firmware (MicroPython + the frozen pile package)  0x000000 .. 0x0a0000  640 KiB
//   littlefs, mounted at /                             0x0a0000 .. 0x200000  1408 KiB
#define MICROPY_HW_BOARD_NAME                   "Pile controller (Raspberry Pi Pico)"
#define MICROPY_HW_FLASH_STORAGE_BYTES          (1408 * 1024)
