// A fake ACRN device model (acrn-dm) for contract tests. It parses its command line the way
// acrn-dm 1.x does (getopt_long with the same options; `-s` slots, `-l` LPC, the VM name as
// the only positional argument), refuses what acrn-dm refuses and what this fake does not
// emulate, then behaves like a running VM: it listens on its virtio-console unix sockets (one
// client per port, ever, as acrn-dm does; a non-console port echoes like a stand-in agent),
// answers acrnctl on a monitor socket, and stays up until SIGINT (or SIGHUP), then exits 0.
// Like acrn-dm, it leaves its console socket files behind when it exits.
//
// Knobs (environment; see common.ts for FAKE_ACRN_STATE and FAKE_ACRN_LOG):
//   FAKE_ACRN_DM_IGNORE_SIGINT=1     ignore SIGINT/SIGHUP (only SIGKILL stops it)
//   FAKE_ACRN_DM_FAIL=<message>      after parsing, fail VM creation with <message>, exit 1
//   FAKE_ACRN_DM_NO_SOCKET=1         never create the console sockets (a hung device model)
//   FAKE_ACRN_DM_SOCKET_DELAY_MS=<n> create the sockets n ms after starting
//   FAKE_ACRN_DM_CRASH_AFTER_MS=<n>  exit 1 n ms after the VM is up (a crashed VM)
import {
  accessSync,
  constants,
  existsSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import path from "node:path";
import {
  die,
  monitorPath,
  recordInvocation,
  recordPath,
  stateDir,
  writeRecord,
  type FakeSlot,
  type FakeVmRecord,
  type MonitorReply,
  type MonitorRequest,
} from "./common.js";

const argv = process.argv.slice(2);
recordInvocation("acrn-dm", argv);

const ACRN_UUIDS = new Set([
  "a7ada506-1ab0-4b6b-a0da-e513ca9b8c2f",
  "dbeae168-26e4-4084-9227-622193e56325",
  "18ed60cd-e9ea-4bf4-8f87-8523fc8347a3",
  "3f90b6f8-449a-4e72-b99c-063a889fc422",
  "1ae8587b-e599-4b59-8260-6d14ac166a55",
  "75f3b94b-49ed-48fc-b019-577ef45adf2b",
  "ca62cf3c-8359-47e8-a3f7-de2d682dfb02",
  "e3189497-c3f6-4b97-9e2c-18ac0ab9064d",
]);

const EX_USAGE = 64;
function usage(code: number): never {
  return die(
    code,
    "Usage: acrn-dm [-hAEWY] [-c vcpus] [-l <lpc>] [-m mem] [-p vcpu:hostcpu] [-s <pci>] [-U uuid] [-k kernel] [-B bootargs] <vm>",
  );
}

// ---- getopt_long, as acrn-dm calls it ------------------------------------------------------

const SHORT_WITH_ARG = new Set("EkrBpcsmlUGi".split(""));
const SHORT_FLAGS = new Set("hAWYv".split(""));
const LONG: Record<string, { opt: string; arg: boolean }> = {
  acpi: { opt: "A", arg: false },
  pincpu: { opt: "p", arg: true },
  ncpus: { opt: "c", arg: true },
  elf_file: { opt: "E", arg: true },
  ioc_node: { opt: "i", arg: true },
  lpc: { opt: "l", arg: true },
  pci_slot: { opt: "s", arg: true },
  memsize: { opt: "m", arg: true },
  uuid: { opt: "U", arg: true },
  virtio_msix: { opt: "W", arg: false },
  mptgen: { opt: "Y", arg: false },
  kernel: { opt: "k", arg: true },
  ramdisk: { opt: "r", arg: true },
  bootargs: { opt: "B", arg: true },
  version: { opt: "v", arg: false },
  gvtargs: { opt: "G", arg: true },
  help: { opt: "h", arg: false },
  vsbl: { opt: "vsbl", arg: true },
  ovmf: { opt: "ovmf", arg: true },
  part_info: { opt: "part_info", arg: true },
  enable_trusty: { opt: "enable_trusty", arg: false },
  virtio_poll: { opt: "virtio_poll", arg: true },
  mac_seed: { opt: "mac_seed", arg: true },
  ptdev_no_reset: { opt: "ptdev_no_reset", arg: false },
  debugexit: { opt: "debugexit", arg: false },
  intr_monitor: { opt: "intr_monitor", arg: true },
  vtpm2: { opt: "vtpm2", arg: true },
};

interface Opt {
  opt: string;
  value?: string;
}

function getopt(args: readonly string[]): { opts: Opt[]; positional: string[] } {
  const opts: Opt[] = [];
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = a.slice(2, eq === -1 ? undefined : eq);
      const spec = LONG[name];
      if (!spec) {
        process.stderr.write(`acrn-dm: unrecognized option '${a}'\n`);
        usage(1);
      }
      if (!spec.arg) {
        if (eq !== -1) {
          process.stderr.write(`acrn-dm: option '--${name}' doesn't allow an argument\n`);
          usage(1);
        }
        opts.push({ opt: spec.opt });
      } else if (eq !== -1) {
        opts.push({ opt: spec.opt, value: a.slice(eq + 1) });
      } else if (i + 1 < args.length) {
        opts.push({ opt: spec.opt, value: args[++i]! });
      } else {
        process.stderr.write(`acrn-dm: option '--${name}' requires an argument\n`);
        usage(1);
      }
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const c = a[j]!;
        if (SHORT_FLAGS.has(c)) {
          opts.push({ opt: c });
        } else if (SHORT_WITH_ARG.has(c)) {
          if (j + 1 < a.length) opts.push({ opt: c, value: a.slice(j + 1) });
          else if (i + 1 < args.length) opts.push({ opt: c, value: args[++i]! });
          else {
            process.stderr.write(`acrn-dm: option requires an argument -- '${c}'\n`);
            usage(1);
          }
          break;
        } else {
          process.stderr.write(`acrn-dm: invalid option -- '${c}'\n`);
          usage(1);
        }
      }
      continue;
    }
    positional.push(a); // GNU getopt permutes: operands may come anywhere
  }
  return { opts, positional };
}

// ---- option semantics ----------------------------------------------------------------------

const isMulticastOrZero = (mac: string) => {
  const octets = mac.split(":").map((o) => parseInt(o, 16));
  return (octets[0]! & 1) === 1 || octets.every((o) => o === 0);
};

function parseSlot(value: string, taken: Map<string, FakeSlot>): FakeSlot {
  const comma = value.indexOf(",");
  if (comma === -1) die(1, `Invalid PCI slot info field "${value}"`);
  const loc = value.slice(0, comma).split(":");
  const rest = value.slice(comma + 1);
  const comma2 = rest.indexOf(",");
  const emul = comma2 === -1 ? rest : rest.slice(0, comma2);
  const config = comma2 === -1 ? "" : rest.slice(comma2 + 1);
  if (loc.length > 3 || !loc.every((n) => /^\d+$/.test(n))) die(1, `Invalid PCI slot info field "${value}"`);
  const nums = loc.map(Number);
  const [bus, slot, func] =
    nums.length === 3 ? nums : nums.length === 2 ? [0, nums[0]!, nums[1]!] : [0, nums[0]!, 0];
  if (bus !== 0) die(1, `fake acrn-dm: PCI bus ${bus} is not emulated`);
  if (slot! >= 32 || func! >= 8) die(1, `Invalid PCI slot ${slot}:${func} (slot 0-31, function 0-7)`);
  const key = `${slot}:${func}`;
  if (taken.has(key)) die(1, `pci slot ${key} already occupied!`);
  const s: FakeSlot = { slot: slot!, func: func!, emul, config };
  switch (emul) {
    case "hostbridge":
    case "lpc":
      if (config !== "") die(1, `${emul} takes no configuration, got "${config}"`);
      break;
    case "virtio-blk": {
      if (config === "") die(1, "virtio-blk: no backing file (use nodisk for a placeholder)");
      if (config.includes("nodisk")) {
        s.backing = "nodisk";
        s.dummy = true;
        break;
      }
      checkBackingFile(config);
      s.backing = config;
      s.dummy = false;
      break;
    }
    case "virtio-net": {
      const [ifName, ...opts] = config.split(",");
      if (!ifName) die(1, "virtio_net: devname NULL");
      for (const o of opts) {
        const m = /^mac=([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})$/.exec(o);
        if (!m || isMulticastOrZero(m[1]!)) die(1, `Invalid MAC ${o}`);
      }
      if (!/^(tap|vmnet)/.test(ifName))
        process.stdout.write(`virtio_net: ${ifName} is not a tap: the NIC has no backend\n`);
      break;
    }
    case "virtio-console":
      checkConsole(config);
      break;
    default:
      die(1, `fake acrn-dm: PCI device "${emul}" is not emulated`);
  }
  taken.set(key, s);
  return s;
}

const BLOCK_OPTIONS = /^(ro|nocache|sync|direct|writeback|writethru|sectorsize=\d+(\/\d+)?)$/;

function checkBackingFile(config: string): void {
  const [file, ...opts] = config.split(",");
  for (const o of opts) if (!BLOCK_OPTIONS.test(o)) die(1, `Invalid device option "${o}"`);
  const ro = opts.includes("ro");
  try {
    accessSync(file!, ro ? constants.R_OK : constants.R_OK | constants.W_OK);
  } catch {
    die(1, `Could not open backing file: ${file}`);
  }
}

interface ConsolePort {
  console: boolean;
  name: string;
  path: string;
}
const consolePorts: ConsolePort[] = [];

function checkConsole(config: string): void {
  // virtio-console,[@]backend:portname[=portpath][:socket_type]: cocoon uses one socket port per device.
  if (config.includes(",")) die(1, "fake acrn-dm: one backend per virtio-console device, please");
  let spec = config;
  const isConsole = spec.startsWith("@");
  if (isConsole) spec = spec.slice(1);
  const colon = spec.indexOf(":");
  const backend = colon === -1 ? spec : spec.slice(0, colon);
  if (!["stdio", "tty", "pty", "file", "socket"].includes(backend))
    die(1, `vtcon: invalid backend ${backend}!`);
  if (backend !== "socket") die(1, `fake acrn-dm: virtio-console backend "${backend}" is not emulated`);
  const rest = colon === -1 ? "" : spec.slice(colon + 1);
  const eq = rest.indexOf("=");
  if (eq === -1) die(1, "vtcon: portpath is NULL");
  const name = rest.slice(0, eq);
  const [portPath, socketType, ...extra] = rest.slice(eq + 1).split(":");
  if (extra.length > 0) die(1, `vtcon: bad socket spec "${config}"`);
  if (socketType !== undefined && socketType !== "server")
    die(1, `fake acrn-dm: socket type "${socketType}" is not emulated`);
  if (!name || !portPath) die(1, `vtcon: port name or path missing in "${config}"`);
  if (!path.isAbsolute(portPath)) die(1, `fake acrn-dm: socket path ${portPath} is relative`);
  if (Buffer.byteLength(portPath) > 107) die(1, `Bind Error: ${portPath} does not fit sun_path`);
  if (isConsole && consolePorts.some((p) => p.console)) die(1, "fake acrn-dm: two console ports");
  consolePorts.push({ console: isConsole, name, path: portPath });
}

function parseMemsize(value: string): string {
  if (!/^\d+[kKmMgGtT]?$/.test(value)) die(EX_USAGE, `acrn-dm: invalid memsize '${value}'`);
  return value;
}

function fileMustExist(what: string, p: string): void {
  try {
    if (!statSync(p).isFile()) throw new Error();
    accessSync(p, constants.R_OK);
  } catch {
    die(1, `SW_LOAD ERR: ${what} file ${p} failed to open`);
  }
}

// ---- main ------------------------------------------------------------------------------------

const { opts, positional } = getopt(argv);
const slots = new Map<string, FakeSlot>();
const record: Omit<FakeVmRecord, "name" | "pid"> = {
  uuid: "",
  memory: "256M",
  vcpus: 1,
  acpi: false,
  kernel: "",
  bootargs: "",
  slots: [],
};
let lpc = false;
for (const { opt, value = "" } of opts) {
  switch (opt) {
    case "h":
      usage(0);
      break;
    case "v":
      process.stdout.write("DM version is: fake-1.0 (cocoon contract tests)\n");
      process.exit(0);
      break;
    case "A":
      record.acpi = true;
      break;
    case "W":
    case "Y":
      break;
    case "c":
      if (!/^[1-9]\d*$/.test(value)) die(1, `Invalid guest vCPUs (${value})`);
      record.vcpus = Number(value);
      break;
    case "s":
      record.slots.push(parseSlot(value, slots));
      break;
    case "m":
      record.memory = parseMemsize(value);
      break;
    case "l":
      if (!/^com[12],stdio$/.test(value))
        die(EX_USAGE, `acrn-dm: invalid lpc device configuration '${value}' (the fake emulates comN,stdio)`);
      lpc = true;
      break;
    case "U":
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value))
        die(1, `vm_create: invalid UUID ${value}`);
      record.uuid = value.toLowerCase();
      break;
    case "k":
      fileMustExist("kernel", value);
      record.kernel = value;
      break;
    case "r":
      fileMustExist("ramdisk", value);
      break;
    case "B":
      if (Buffer.byteLength(value) >= 1024) die(1, "Boot arguments are too long (max 1023)");
      record.bootargs = value;
      break;
    default:
      die(1, `fake acrn-dm: option ${opt.length === 1 ? `-${opt}` : `--${opt}`} is not emulated`);
  }
}
if (positional.length !== 1) usage(1);
const name = positional[0]!;
if (Buffer.byteLength(name) >= 128) die(1, `vmname size exceed 128`);
if (record.kernel === "") die(1, "fake acrn-dm: no kernel (-k): nothing to boot");
if (lpc && !record.slots.some((s) => s.emul === "lpc")) die(1, "fake acrn-dm: -l without an lpc device");
// ACRN only creates VMs whose UUID is on its pre-defined list.
if (!ACRN_UUIDS.has(record.uuid)) die(1, `vm_create: the hypervisor refused UUID ${record.uuid || "(none)"}`);

const dir = stateDir("acrn-dm");
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
for (const f of readdirSync(dir).filter((n) => n.endsWith(".json"))) {
  let other: FakeVmRecord;
  try {
    other = JSON.parse(readFileSync(path.join(dir, f), "utf8")) as FakeVmRecord;
  } catch {
    continue;
  }
  if (!alive(other.pid)) continue;
  if (other.name === name) die(1, `vm_create: a VM named ${name} already exists`);
  if (other.uuid === record.uuid) die(1, `vm_create: UUID ${record.uuid} is in use by ${other.name}`);
}
if (process.env.FAKE_ACRN_DM_FAIL) die(1, `vm_create: ${process.env.FAKE_ACRN_DM_FAIL}`);

const vm: FakeVmRecord = { name, pid: process.pid, ...record };
const servers: net.Server[] = [];

function listen(port: ConsolePort): void {
  rmSync(port.path, { force: true }); // acrn-dm unlinks a stale socket before bind()
  const server = net.createServer((conn) => {
    // acrn-dm serves one client per port, ever: it closes the listening socket after the first
    // accept, and the socket file it leaves refuses later clients (ECONNREFUSED). Closing the
    // listener here removes the file, so a plain file takes its place: connect(2) to a path
    // that is not a socket fails the same way.
    server.close();
    writeFileSync(port.path, "");
    if (port.console) conn.write(`fake acrn-dm console of ${name}\n`);
    else conn.pipe(conn); // a stand-in guest agent: echoes what it receives
    conn.on("error", () => undefined);
  });
  server.on("error", (err) => die(1, `Bind Error = ${err.message}`));
  server.listen(port.path);
  servers.push(server);
}

function serveMonitor(): void {
  const file = monitorPath(dir, name);
  rmSync(file, { force: true });
  const server = net.createServer((conn) => {
    let buf = "";
    conn.on("data", (chunk) => {
      buf += chunk.toString("utf8");
      const nl = buf.indexOf("\n");
      if (nl === -1) return;
      let reply: MonitorReply;
      try {
        const req = JSON.parse(buf.slice(0, nl)) as MonitorRequest;
        reply =
          req.cmd === "blkrescan"
            ? blkrescan(req.devargs)
            : { err: -1, message: `unknown request ${String(req.cmd)}` };
      } catch (err) {
        reply = { err: -1, message: `bad request: ${(err as Error).message}` };
      }
      conn.end(JSON.stringify(reply) + "\n");
    });
    conn.on("error", () => undefined);
  });
  server.listen(file);
  servers.push(server);
}

/** The DM side of `acrnctl blkrescan`: the checks acrn-dm's vm_monitor_blkrescan makes. */
function blkrescan(devargs: string): MonitorReply {
  const comma = devargs.indexOf(",");
  if (comma === -1) return { err: -1, message: "Slot info or path not available!" };
  const slotText = devargs.slice(0, comma);
  const newpath = devargs.slice(comma + 1);
  if (!/^\d+$/.test(slotText)) return { err: -1, message: `Incorrect slot "${slotText}"` };
  const dev = vm.slots.find((s) => s.slot === Number(slotText) && s.func === 0);
  if (!dev) return { err: -1, message: `vdev info failed for Slot ${slotText}` };
  if (dev.emul !== "virtio-blk")
    return { err: -1, message: `virtio-blk only supports rescan: found ${dev.emul} at slot ${slotText}` };
  if (newpath === "") return { err: -1, message: "no path info available" };
  if (newpath.includes("nodisk")) return { err: -1, message: "no valid backend file found" };
  if (!dev.dummy) return { err: -1, message: "Replacing valid backend file not supported!" };
  const [file, ...options] = newpath.split(",");
  if (!options.every((o) => BLOCK_OPTIONS.test(o)) || !file || !existsSync(file)) {
    return { err: -1, message: "Error opening backing file" };
  }
  dev.backing = newpath;
  dev.dummy = false;
  writeRecord(dir, vm);
  return { err: 0, message: `rescanned slot ${slotText}: ${newpath}` };
}

function shutdown(): void {
  process.stdout.write("Receive SIGINT to terminate application...\n");
  rmSync(recordPath(dir, name), { force: true });
  rmSync(monitorPath(dir, name), { force: true });
  // Exit without closing the listeners: like acrn-dm, the console socket files stay behind.
  process.exit(0);
}

for (const sig of ["SIGINT", "SIGHUP"] as const) {
  process.on(sig, () => {
    if (process.env.FAKE_ACRN_DM_IGNORE_SIGINT === "1")
      process.stdout.write(`fake acrn-dm: ignoring ${sig}\n`);
    else shutdown();
  });
}

function start(): void {
  if (process.env.FAKE_ACRN_DM_NO_SOCKET !== "1") for (const port of consolePorts) listen(port);
  serveMonitor();
  writeRecord(dir, vm);
  process.stdout.write(`fake acrn-dm: VM ${name} (${vm.uuid}) running with ${vm.slots.length} PCI devices\n`);
  const crash = Number(process.env.FAKE_ACRN_DM_CRASH_AFTER_MS ?? "");
  if (crash > 0) {
    setTimeout(() => {
      process.stderr.write("fake acrn-dm: the VM crashed\n");
      rmSync(recordPath(dir, name), { force: true });
      rmSync(monitorPath(dir, name), { force: true });
      process.exit(1);
    }, crash);
  }
}

setInterval(() => undefined, 1 << 30); // stay up until a signal
const delay = Number(process.env.FAKE_ACRN_DM_SOCKET_DELAY_MS ?? "0");
if (delay > 0) setTimeout(start, delay);
else start();
