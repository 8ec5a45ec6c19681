// Shared by the fake ACRN tools (acrn-dm, acrnctl, platform-info). They stand in for ACRN's
// real programs in contract tests, so they validate their arguments the way the real ones do
// (and refuse what they do not emulate) and record every invocation.
//
// Environment:
//   FAKE_ACRN_STATE  (required) a directory standing in for /run/acrn/mngr: each running fake
//                    acrn-dm keeps <name>.json (its devices) and <name>.monitor.sock there
//   FAKE_ACRN_LOG    (optional) a file each tool appends one JSON line per invocation to:
//                    {"tool","argv","pid","cwd"}
import { appendFileSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";

export function recordInvocation(tool: string, argv: readonly string[]): void {
  const log = process.env.FAKE_ACRN_LOG;
  if (!log) return;
  // One write(2) per line with O_APPEND: concurrent tools never interleave their lines.
  appendFileSync(log, JSON.stringify({ tool, argv, pid: process.pid, cwd: process.cwd() }) + "\n");
}

/** Exits with `code` after printing `message` on stderr, the way the C tools do. */
export function die(code: number, message: string): never {
  process.stderr.write(message.endsWith("\n") ? message : message + "\n");
  process.exit(code);
}

export function stateDir(tool: string): string {
  const dir = process.env.FAKE_ACRN_STATE;
  if (!dir || !path.isAbsolute(dir)) die(70, `fake ${tool}: FAKE_ACRN_STATE must name an absolute directory`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** One PCI device of a running fake acrn-dm, as acrnctl's monitor requests see it. */
export interface FakeSlot {
  slot: number;
  func: number;
  emul: string;
  config: string;
  /** virtio-blk only: the backing file (with options), or "nodisk". */
  backing?: string;
  /** virtio-blk only: a placeholder that blkrescan may fill once. */
  dummy?: boolean;
}

/** What a fake acrn-dm publishes about itself. */
export interface FakeVmRecord {
  name: string;
  pid: number;
  uuid: string;
  memory: string;
  vcpus: number;
  acpi: boolean;
  kernel: string;
  bootargs: string;
  slots: FakeSlot[];
}

export function recordPath(dir: string, name: string): string {
  return path.join(dir, `${name}.json`);
}

export function monitorPath(dir: string, name: string): string {
  return path.join(dir, `${name}.monitor.sock`);
}

export function writeRecord(dir: string, record: FakeVmRecord): void {
  const file = recordPath(dir, record.name);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(record, null, 2));
  renameSync(tmp, file);
}

/** Requests acrnctl sends to a fake acrn-dm's monitor socket (one JSON line each way). */
export interface MonitorRequest {
  cmd: "blkrescan";
  devargs: string;
}
export interface MonitorReply {
  err: number;
  message: string;
}
