// An emulated Raspberry Pi Pico (rp2040js) that a pile's firmware runs on unchanged.
//
//   node pico.mjs --bootrom ROM.bin --flash FLASH.img [--uf2 FIRMWARE.uf2] [--flash-timing]
//
// The board's 2 MiB flash lives in FLASH.img: --uf2 writes a firmware onto it first (as
// a drag-and-drop does, leaving the filesystem), and every erase and program the
// firmware makes is written through to the file, so a power cut (this process killed)
// keeps what was deployed; with --flash-timing they take the flash chip's typical time
// (else none). The USB serial (the REPL) and UART0/UART1 are TCP servers on
// 127.0.0.1 (host_tools/pilectl/pico.py makes ptys of them); UART bytes go in at the
// line's baud rate and only while the 32-byte receive FIFO has room, as on a wire.
// Emulated time is paced to wall time. When the watchdog fires, the chip starts again
// with the same flash and the watchdog's reason register set, so machine.reset_cause()
// says WDT_RESET. Commands on stdin or the control port, one JSON object a line:
// {"gpio": [PIN, 0|1]} drives an input pin, {"power": "cycle"} cuts and restores power,
// {"stats": true} asks for the counters (with the flash erases and programs since boot;
// "tag": T is given back in the event),
// {"profile": N} samples the program counter every N instructions (with "callers": K, also
// up to K return addresses off the stack) until {"profile": 0} emits the samples,
// {"frames": ["uart0", ...]} records the emulated time and first bytes ("bytes", 16) of
// every frame each way on those UARTs (a frame: bytes less than "gap_us", 1000, apart)
// until {"frames": null} emits them. Events on stdout, one JSON object a line: ready
// (the ports), boot (its cause), watchdog, stats, profile, frames.
//
// Five defects of rp2040js 1.4.1 are worked around here (../shared/rp2/README.md): the
// emulated SSI drops flash writes (so the boot ROM's flash_range_erase and
// flash_range_program are replaced by breakpoints done here on the flash array); the
// UART raises its transmit interrupt again on every register access (so here it is
// raised once a byte has left, as the PL011 does when its FIFO drains); and a watchdog
// that fires only logs, then fires again at the same instant for ever (so here it stops
// and the chip starts again); and its USB host answers an OUT transfer at once with no
// data (so here it waits for data, as a host's NAK does); and it gives a UART whose baud
// rate is not set yet a rate of Infinity (so here bytes reach only a UART that listens).

import fs from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { ConsoleLogger, LogLevel, Simulator, USBCDC } from 'rp2040js';

const FLASH_SIZE = 2 * 1024 * 1024;
const FLASH_BASE = 0x10000000;
const SECTOR = 4096;
const ROM_FLASH_RANGE_ERASE = 0x237c; // B1 boot ROM, function table codes 'RE' and 'RP'
const ROM_FLASH_RANGE_PROGRAM = 0x23c4;
const BKPT_ERASE = 0xbe01; // bkpt #1
const BKPT_PROGRAM = 0xbe02;
// With --flash-timing, an erase or program takes the time the Pico's flash (Winbond
// W25Q16JV) takes, typically: the core runs nothing meanwhile (MicroPython's rp2 port
// writes the flash with interrupts off). Without it they take no time.
const ERASE_NS_A_SECTOR = 45e6; // 4 KiB sector erase: 45 ms typical, 400 ms at most
const PROGRAM_NS_A_PAGE = 0.4e6; // 256-byte page program: 0.4 ms typical, 3 ms at most
const PAGE = 256;
const NS_PER_CYCLE = 8; // 125 MHz
const AHEAD_NS = 2e6; // emulated time may run this far ahead of wall time
const SLICE_INSTRUCTIONS = 200000; // then the event loop serves the sockets
const UART_TXINTR = 1 << 5;
const STACK_SCAN = 256; // bytes of stack looked through for a sample's callers
const RAM_END = 0x20042000;
const UART_DR = 0x0;
const WATCHDOG_BASE = 0x40058000;
const quiet = new ConsoleLogger(LogLevel.Error); // not "Read from invalid SIO address" at each boot
const WATCHDOG_REASON_TIMER = 1;

const { values: args } = parseArgs({
  options: {
    bootrom: { type: 'string' },
    flash: { type: 'string' },
    uf2: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    'flash-timing': { type: 'boolean', default: false },
  },
});
for (const name of ['bootrom', 'flash']) {
  if (!args[name]) {
    fail(`--${name} is required`);
  }
}

function fail(message) {
  process.stderr.write(`pico: ${message}\n`);
  process.exit(2);
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

// -- the flash file ------------------------------------------------------------------

function openFlash(path, uf2) {
  const flash = new Uint8Array(FLASH_SIZE).fill(0xff);
  if (fs.existsSync(path)) {
    const data = fs.readFileSync(path);
    flash.set(data.subarray(0, FLASH_SIZE));
  }
  if (uf2) {
    writeUF2(flash, fs.readFileSync(uf2), uf2);
  }
  fs.writeFileSync(path, flash);
  return { data: flash, fd: fs.openSync(path, 'r+') };
}

// UF2 (github.com/microsoft/uf2): 512-byte blocks, each with its target address and up
// to 476 bytes of payload, checked by two magic numbers at the start and one at the end.
function writeUF2(flash, file, name) {
  if (file.length % 512 !== 0) {
    fail(`${name} is not a UF2 file (its size is not a multiple of 512)`);
  }
  for (let at = 0; at < file.length; at += 512) {
    const block = new DataView(file.buffer, file.byteOffset + at, 512);
    const good = block.getUint32(0, true) === 0x0a324655 &&
      block.getUint32(4, true) === 0x9e5d5157 && block.getUint32(508, true) === 0x0ab16f30;
    if (!good) {
      fail(`${name}: block ${at / 512} is not a UF2 block`);
    }
    const address = block.getUint32(12, true) - FLASH_BASE;
    const size = block.getUint32(16, true);
    if (address < 0 || address + size > FLASH_SIZE || size > 476) {
      fail(`${name}: block ${at / 512} lies outside the Pico's 2 MiB flash`);
    }
    flash.set(file.subarray(at + 32, at + 32 + size), address);
  }
}

// -- the chip ------------------------------------------------------------------------

const bootrom = new Uint32Array(new Uint8Array(fs.readFileSync(args.bootrom)).buffer);
const flash = openFlash(args.flash, args.uf2);

let sim = null; // the running chip; a new one at every reset
let cdc = null;
let resetPending = null; // the reason for a reset asked for while executing
const channels = {}; // name -> { socket, queue }
let wallStart = 0;

function boot(cause) {
  sim = new Simulator();
  const mcu = sim.rp2040;
  const rom = new Uint16Array(bootrom.buffer.slice(0));
  rom[ROM_FLASH_RANGE_ERASE / 2] = BKPT_ERASE;
  rom[ROM_FLASH_RANGE_PROGRAM / 2] = BKPT_PROGRAM;
  mcu.loadBootrom(new Uint32Array(rom.buffer));
  mcu.flash.set(flash.data);
  mcu.onBreak = (code) => flashOperation(mcu, code);
  const watchdog = mcu.peripherals[WATCHDOG_BASE >>> 12 & 0xfffff]; // not a field of its own
  watchdog.onWatchdogTrigger = () => {
    watchdog.alarm.enable = false; // else it fires again at once, for ever (rp2040js 1.4.1)
    resetPending = resetPending ?? 'watchdog';
  };
  if (cause === 'watchdog') {
    watchdog.reason = WATCHDOG_REASON_TIMER;
  }
  mcu.logger = quiet;
  mcu.uart.forEach((uart, index) => fixUART(uart, `uart${index}`));
  cdc = new USBCDC(mcu.usbCtrl);
  cdc.onSerialData = (data) => send('usb', data);
  cdc.pendingRead = 0;
  mcu.usbCtrl.onEndpointRead = (endpoint, size) => {
    if (endpoint === cdc.outEndpoint) {
      cdc.pendingRead = size;
      answerRead();
    }
  };
  for (const [pin, value] of Object.entries(pinLevels)) {
    mcu.gpio[pin].setInputValue(value);
  }
  mcu.core.PC = FLASH_BASE;
  wallStart = performance.now();
  executed = idleNs = 0;
  flashOps = { erases: 0, erased_bytes: 0, programs: 0, programmed_bytes: 0 };
  emit({ event: 'boot', cause });
  feed('uart0'); // what the host sent meanwhile reaches the new chip's UARTs (or is lost)
  feed('uart1');
}

// The boot ROM's flash_range_erase(offset, count, block_size, block_cmd) and
// flash_range_program(offset, data, count), done on the flash array and the file.
function flashOperation(mcu, code) {
  const { registers } = mcu.core;
  const offset = registers[0];
  if (code === 1) {
    const count = registers[1];
    if (offset % SECTOR || count % SECTOR || offset + count > FLASH_SIZE) {
      emit({ event: 'flash-refused', op: 'erase', offset, count });
    } else {
      mcu.flash.fill(0xff, offset, offset + count);
      persist(mcu, offset, count);
      flashOps.erases++;
      flashOps.erased_bytes += count;
      flashTime(mcu, (count / SECTOR) * ERASE_NS_A_SECTOR);
    }
  } else if (code === 2) {
    const [data, count] = [registers[1], registers[2]];
    if (offset + count > FLASH_SIZE) {
      emit({ event: 'flash-refused', op: 'program', offset, count });
    } else {
      for (let i = 0; i < count; i++) {
        mcu.flash[offset + i] &= mcu.readUint8(data + i); // programming only clears bits
      }
      persist(mcu, offset, count);
      flashOps.programs++;
      flashOps.programmed_bytes += count;
      flashTime(mcu, Math.ceil(count / PAGE) * PROGRAM_NS_A_PAGE);
    }
  } else {
    return; // a breakpoint in the firmware itself: nothing of ours
  }
  mcu.core.PC = mcu.core.LR & ~1; // return from the ROM function
}

function flashTime(mcu, ns) {
  if (args['flash-timing']) {
    mcu.clock.tick(ns); // busy, not idle: the core waits on the flash
    flashOps.busy_ns = (flashOps.busy_ns || 0) + ns;
  }
}

function persist(mcu, offset, count) {
  flash.data.set(mcu.flash.subarray(offset, offset + count), offset);
  fs.writeSync(flash.fd, flash.data, offset, count, offset);
}

// PL011 transmit interrupt: raised when a byte leaves (the FIFO drains to its level),
// cleared by the firmware, and not raised again until the next byte leaves.
function fixUART(uart, name) {
  uart.checkInterrupts = function checkInterrupts() {
    this.rp2040.setInterrupt(this.irq, !!(this.interruptStatus & this.interruptMask));
  };
  const write = uart.writeUint32.bind(uart);
  uart.writeUint32 = (offset, value) => {
    write(offset, value);
    if (offset === UART_DR) {
      uart.interruptStatus |= UART_TXINTR;
      uart.checkInterrupts();
    }
  };
  uart.onByte = (value) => {
    send(name, Uint8Array.of(value));
    record(name, 'out', value);
  };
  uart.feedTimer = null;
}

// -- the host's side: a TCP server a channel -------------------------------------------

const pinLevels = {};

function send(name, data) {
  const channel = channels[name];
  if (channel?.socket) {
    channel.socket.write(data);
  }
}

function listen(name) {
  const channel = { socket: null, queue: [], baud: 115200 }; // baud: the UART's last
  channels[name] = channel;
  const server = net.createServer((socket) => {
    if (channel.socket) {
      channel.socket.destroy(); // one host at a time: the newest
    }
    channel.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (data) => {
      channel.queue.push(...data);
      feed(name);
    });
    socket.on('close', () => {
      if (channel.socket === socket) {
        channel.socket = null;
      }
    });
    socket.on('error', () => {}); // the host went away: 'close' follows
  });
  return new Promise((resolve) => server.listen(0, args.host, () => resolve(server.address().port)));
}

// Bytes from the host into the chip: into the USB CDC's buffer while it has room, into a
// UART's receive FIFO one character time apart and only while the FIFO has room. A UART
// whose receiver is off (a chip booting after a reset, before the firmware set its baud
// rate and enabled it) hears nothing: the bytes that reach it then are lost, one
// character time apart at the rate the line last ran at, as on a wire. (Fed at the
// baud rate of a UART with no divider set, which rp2040js gives as Infinity, bytes came
// at no time apart: with its FIFO full the alarm fired again at the same instant for
// ever and the emulator hung, whenever a host wrote to a rebooting board.)
function feed(name) {
  const channel = channels[name];
  if (!channel.queue.length || !sim) {
    return;
  }
  if (name === 'usb') {
    while (channel.queue.length && !cdc.txFIFO.full) {
      cdc.sendSerialByte(channel.queue.shift());
    }
    answerRead();
    return;
  }
  const index = name === 'uart0' ? 0 : 1;
  const uart = sim.rp2040.uart[index];
  if (uart.feedTimer) {
    return; // a character is on its way
  }
  const clock = sim.clock; // this chip's: a reset ends the chain with it (boot feeds anew)
  const step = () => {
    uart.feedTimer = null;
    if (!channel.queue.length) {
      return;
    }
    const listening = uart.enabled && uart.rxEnabled && uart.baudDivider > 0;
    if (!listening) {
      channel.queue.shift(); // lost on the wire
    } else if (!uart.rxFIFO.full) {
      const value = channel.queue.shift();
      uart.feedByte(value);
      record(name, 'in', value);
    }
    if (listening) {
      channel.baud = uart.baudRate;
    }
    uart.feedTimer = clock.createAlarm(step);
    uart.feedTimer.schedule(10e9 / channel.baud); // 10 bits a character
  };
  step();
}

// The host's answer to the device's OUT transfer: data when there is some, else nothing
// yet (a real host NAKs). rp2040js answers at once with an empty packet, and TinyUSB
// asks again at once: the core then never sleeps (94 % busy at an idle REPL).
function answerRead() {
  if (!cdc.pendingRead || cdc.txFIFO.empty) {
    return;
  }
  const data = new Uint8Array(Math.min(cdc.pendingRead, cdc.txFIFO.itemCount));
  for (let i = 0; i < data.length; i++) {
    data[i] = cdc.txFIFO.pull();
  }
  cdc.pendingRead = 0;
  cdc.usb.endpointReadDone(cdc.outEndpoint, data);
}

// -- running ---------------------------------------------------------------------------

let executed = 0; // instructions, since the last boot
let idleNs = 0; // emulated time the core spent waiting for an interrupt, since then
let flashOps = {}; // the boot ROM's erases and programs, since then (count and bytes)
let recording = null; // { bytes, gapNs, channels: { name: { frames, open: {in, out} } } }

// The frames on the UARTs asked for, each way: [first byte's emulated ns, last byte's,
// "out" (the firmware sent it) or "in" (the host's, as its bytes entered the FIFO), its
// first `bytes` in hex]. A byte more than `gapNs` after the last one that way starts a
// frame. What a host, on wall time, cannot see: when the chip sent and heard, on its own
// clock (a Modbus request's time, how long a request took to answer).
function record(name, way, value) {
  const found = recording?.channels[name];
  if (!found) {
    return;
  }
  const now = sim.clock.nanos;
  let frame = found.open[way];
  if (!frame || now - frame[1] > recording.gapNs) {
    frame = [now, now, way, ''];
    found.open[way] = frame;
    found.frames.push(frame);
  }
  frame[1] = now;
  if (frame[3].length < recording.bytes * 2) {
    frame[3] += value.toString(16).padStart(2, '0');
  }
}
let profileEvery = 0; // sample the program counter every this many instructions (0: off)
let profileCallers = 0; // with each sample, up to this many return addresses off the stack
let profile = new Map(); // "pc[:caller...]" -> samples

// The program counter and the first words on the stack that look like return addresses
// (odd, in flash): the M0+ keeps no frame pointer, so these are the callers most of the
// time, with now and then a stale word (pilectl.armprofile.callers counts them).
function sampleWithCallers(mcu) {
  let key = String(mcu.core.PC);
  const sp = mcu.core.SP;
  let found = 0;
  for (let at = sp; at < sp + STACK_SCAN && at < RAM_END && found < profileCallers; at += 4) {
    const word = mcu.readUint32(at);
    if ((word & 1) && word >= FLASH_BASE && word < FLASH_BASE + FLASH_SIZE) {
      key += ':' + ((word & ~1) >>> 0);
      found++;
    }
  }
  return key;
}

function run() {
  if (resetPending) {
    const cause = resetPending;
    resetPending = null;
    emit({ event: cause, emulated_ns: sim.clock.nanos }); // when, on the chip that ends
    boot(cause);
  }
  const { rp2040: mcu, clock } = sim;
  const limit = (performance.now() - wallStart) * 1e6 + AHEAD_NS;
  for (let i = 0; i < SLICE_INSTRUCTIONS && clock.nanos < limit && !resetPending; i++) {
    if (mcu.core.waiting) {
      const next = clock.nanosToNextAlarm;
      const skip = next > 0 && clock.nanos + next <= limit ? next : limit - clock.nanos;
      clock.tick(skip);
      idleNs += skip;
    } else {
      if (profileEvery && executed % profileEvery === 0) {
        const key = profileCallers ? sampleWithCallers(mcu) : String(mcu.core.PC);
        profile.set(key, (profile.get(key) || 0) + 1);
      }
      clock.tick(mcu.core.executeInstruction() * NS_PER_CYCLE);
      executed++;
    }
  }
  feed('usb');
  const ahead = clock.nanos - (performance.now() - wallStart) * 1e6;
  setTimeout(run, ahead > 1e6 ? ahead / 1e6 : 0);
}

const ports = {};
for (const name of ['usb', 'uart0', 'uart1']) {
  ports[name] = await listen(name);
}

// One command (a JSON line), from stdin or from a client of the control port.
function command(line) {
  let order;
  try {
    order = JSON.parse(line);
  } catch {
    emit({ event: 'error', detail: `not JSON: ${line}` });
    return;
  }
  const pin = Array.isArray(order.gpio) ? order.gpio[0] : null;
  if (Number.isInteger(pin) && pin >= 0 && pin < sim.rp2040.gpio.length) {
    pinLevels[pin] = !!order.gpio[1];
    sim.rp2040.gpio[pin].setInputValue(!!order.gpio[1]);
  } else if (order.power === 'cycle') {
    resetPending = 'power';
  } else if (order.stats) {
    emit({ event: 'stats', emulated_ns: sim.clock.nanos, idle_ns: idleNs,
      instructions: executed, wall_ms: performance.now() - wallStart, flash: flashOps,
      ...(order.tag === undefined ? {} : { tag: order.tag }) });
  } else if (order.frames !== undefined) {
    if (recording) {
      const found = {};
      for (const [name, { frames }] of Object.entries(recording.channels)) {
        found[name] = frames;
      }
      emit({ event: 'frames', channels: found });
    }
    const names = Array.isArray(order.frames) ? order.frames : [];
    recording = names.length ? { bytes: order.bytes ?? 16, gapNs: (order.gap_us ?? 1000) * 1000,
      channels: Object.fromEntries(names.map((n) => [n, { frames: [], open: {} }])) } : null;
  } else if (Number.isInteger(order.profile) && order.profile >= 0) {
    if (!order.profile) {
      emit({ event: 'profile', every: profileEvery, samples: Object.fromEntries(profile) });
    }
    profileEvery = order.profile;
    profileCallers = Number.isInteger(order.callers) ? order.callers : 0;
    profile = new Map();
  } else {
    emit({ event: 'error', detail: `unknown command: ${line}` });
  }
}

readline.createInterface({ input: process.stdin }).on('line', command);
// The control port: the same commands from another process (a test pressing the E-stop).
const control = net.createServer((socket) => {
  readline.createInterface({ input: socket }).on('line', command);
  socket.on('error', () => {});
});
ports.control = await new Promise((resolve) => {
  control.listen(0, args.host, () => resolve(control.address().port));
});
process.stdin.on('end', () => process.exit(0)); // the host is gone: so is the board

boot('power');
emit({ event: 'ready', ...ports });
run();
