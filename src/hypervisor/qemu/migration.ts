/**
 * VM templates and snapshots on QEMU through migration to and from a file, with an `exec:`
 * URI (QEMU 7.2 has no `file:` URI, and an `exec:` one needs no file descriptor passing).
 *
 * - A template boots with its RAM in a shared file; saving it writes only the device state
 *   (`x-ignore-shared` leaves the RAM where it is, ~70 KB).
 * - A clone maps that file private (copy-on-write) and loads the device state.
 * - A snapshot of a running sandbox writes device state and RAM into one stream; restoring it
 *   reads the stream back into a VM built with the same command line.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { HypervisorError, messageOf } from "../../errors.js";
import type { QemuVmSpec } from "../../vmm/qemu/cmdline.js";
import type { QmpClient } from "../../vmm/qemu/qmp.js";
import type { HypervisorConfig } from "../config.js";

/** Where a VM's state comes from when it starts. */
export type QemuBootMode =
  | { kind: "cold" }
  /** Boot to be a template: RAM shared in `memoryPath`. */
  | { kind: "template"; memoryPath: string }
  /** A clone of a template: RAM mapped private from `memoryPath`, devices from `statePath`. */
  | { kind: "clone"; memoryPath: string; statePath: string }
  /** A snapshot: device state and RAM in `statePath`; `namedRam` when the source named its RAM. */
  | { kind: "snapshot"; statePath: string; namedRam: boolean };

/** Restoring a snapshot: passed to createVM by the sandbox layer. */
export interface SnapshotRestore {
  statePath: string;
  namedRam: boolean;
}

export function bootModeFor(config: HypervisorConfig, restore?: SnapshotRestore): QemuBootMode {
  if (restore) return { kind: "snapshot", statePath: restore.statePath, namedRam: restore.namedRam };
  if (config.bootToBeTemplate) return { kind: "template", memoryPath: config.memoryPath };
  if (config.bootFromTemplate)
    return { kind: "clone", memoryPath: config.memoryPath, statePath: config.devicesStatePath };
  return { kind: "cold" };
}

/** The command-line differences of each mode: the memory backend and `-incoming defer`. */
export function applyBootMode(spec: QemuVmSpec, mode: QemuBootMode): void {
  if (mode.kind === "cold") return;
  if (spec.memory.shared) {
    // vhost-user devices (virtio-fs) need RAM shared with their daemon, and cannot migrate.
    throw new HypervisorError(
      "ERR_NOT_SUPPORTED",
      "VM templates and snapshots cannot be used with virtio-fs shares: the clone's RAM is private",
    );
  }
  if (mode.kind === "template") spec.memory.backend = { kind: "file", path: mode.memoryPath, share: true };
  if (mode.kind === "clone") spec.memory.backend = { kind: "file", path: mode.memoryPath, share: false };
  if (mode.kind === "snapshot" && mode.namedRam) spec.memory.backend = { kind: "ram" };
  if (mode.kind !== "template") spec.incomingDefer = true;
}

function shellQuote(p: string): string {
  return `'${p.replaceAll("'", `'\\''`)}'`;
}

async function setIgnoreShared(qmp: QmpClient, on: boolean): Promise<void> {
  await qmp.execute("migrate-set-capabilities", {
    capabilities: [{ capability: "x-ignore-shared", state: on }],
  });
}

/** Polls query-migrate until the migration completed; a failure is an error with QEMU's reason. */
async function waitForMigration(qmp: QmpClient, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = (await qmp.execute("query-migrate")) as { status?: string; "error-desc"?: string };
    if (info.status === "completed") return;
    if (info.status === "failed" || info.status === "cancelled") {
      throw new HypervisorError(
        "ERR_VMM_API",
        `QEMU could not ${what}: ${info["error-desc"] ?? info.status}`,
        { hint: "is the file system full? (templates and snapshots need room for the VM's state)" },
      );
    }
    if (Date.now() > deadline) throw new HypervisorError("ERR_VMM_TIMEOUT", `QEMU did not ${what} in time`);
    await sleep(20);
  }
}

/**
 * Pauses the VM and writes its state to `statePath`: device state only with `ignoreShared`
 * (a template, whose RAM is in its shared file), else device state and RAM (a snapshot).
 * The VM stays paused.
 */
export async function saveState(
  qmp: QmpClient,
  statePath: string,
  options: { ignoreShared: boolean; timeoutMs?: number },
): Promise<void> {
  await qmp.execute("stop");
  await setIgnoreShared(qmp, options.ignoreShared);
  // QEMU runs the command through /bin/sh; `set -e` makes a failed write fail the migration.
  await qmp.execute("migrate", { uri: `exec:set -e; cat > ${shellQuote(statePath)}` });
  await waitForMigration(qmp, "save the VM state", options.timeoutMs ?? 300_000);
}

/** Loads the state into a VM started with `-incoming defer`, then lets it run. */
export async function loadState(
  qmp: QmpClient,
  mode: Extract<QemuBootMode, { kind: "clone" | "snapshot" }>,
  timeoutMs = 300_000,
): Promise<void> {
  try {
    await setIgnoreShared(qmp, mode.kind === "clone");
    await qmp.execute("migrate-incoming", { uri: `exec:cat ${shellQuote(mode.statePath)}` });
    await waitForMigration(qmp, "load the VM state", timeoutMs);
    await qmp.execute("cont");
  } catch (err) {
    if (err instanceof HypervisorError) throw err;
    throw new HypervisorError("ERR_VMM_API", `QEMU could not load the VM state: ${messageOf(err)}`, {
      cause: err,
    });
  }
}
