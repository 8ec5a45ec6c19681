import { setTimeout as sleep } from "node:timers/promises";
import { HypervisorError, isCocoonError } from "../../errors.js";
import { hostMemoryKb } from "../../host/proc.js";
import type { QmpClient } from "../../vmm/qemu/qmp.js";
import type { HypervisorConfig } from "../config.js";

/**
 * Live resize for QEMU machines with ACPI hotplug (q35, pc): vCPUs as hot-plugged CPU
 * devices, memory as pc-dimm devices, each backed by its own memory object. Only what cocoon
 * plugged is unplugged again (the boot CPUs and RAM stay), newest first.
 */
export interface HotplugState {
  cpus: string[];
  /** A vCPU was unplugged: QEMU 7.2 (TCG) segfaults on the next vCPU hotplug, so none follows. */
  cpuUnplugged: boolean;
  /** Same for memory: a DIMM plugged after an unplug crashed QEMU 7.2 (TCG) in our runs. */
  memoryUnplugged?: boolean;
  dimms: { id: string; sizeMiB: number }[];
  sharedMemory: boolean;
}

/** How far memory may grow: the configured offset, else (as Kata does) the host's memory. */
export async function maxMemoryMiB(config: HypervisorConfig): Promise<number> {
  if (config.memOffset > 0) return config.memorySize + config.memOffset;
  const hostMiB = Math.floor((await hostMemoryKb()) / 1024);
  return Math.max(config.memorySize, hostMiB);
}

interface HotpluggableCpu {
  type: string;
  props: Record<string, number>;
  "qom-path"?: string;
}

const UNPLUG_TIMEOUT_MS = 60_000;

function limitError(message: string, hint?: string): HypervisorError {
  return new HypervisorError("ERR_RESOURCE_LIMIT", message, hint ? { hint } : {});
}

/**
 * Asks the guest to give a device back and waits until QEMU has removed it. QEMU 7.2 does not
 * always send DEVICE_DELETED for an ejected CPU, so the device list is polled as well.
 */
async function unplug(qmp: QmpClient, id: string, what: string, gone: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + UNPLUG_TIMEOUT_MS;
  let deleted = false;
  const onDeleted = (d: Record<string, unknown>): void => {
    if (d.device === id) deleted = true;
  };
  qmp.on("DEVICE_DELETED", onDeleted);
  try {
    await qmp.execute("device_del", { id });
    while (!deleted && !(await gone())) {
      if (Date.now() >= deadline) throw new Error("timeout");
      await sleep(250);
    }
  } catch (err) {
    if (isCocoonError(err)) throw err;
    throw new HypervisorError(
      "ERR_RESOURCE_LIMIT",
      `the guest did not release ${what} within ${UNPLUG_TIMEOUT_MS / 1000} s: it is still in use`,
      { hint: "free memory or stop processes in the guest, then try again" },
    );
  } finally {
    qmp.off("DEVICE_DELETED", onDeleted);
  }
}

async function cpuGone(qmp: QmpClient, id: string): Promise<boolean> {
  const cpus = (await qmp.execute("query-hotpluggable-cpus")) as HotpluggableCpu[];
  return !cpus.some((c) => c["qom-path"] === `/machine/peripheral/${id}`);
}

async function dimmGone(qmp: QmpClient, id: string): Promise<boolean> {
  const devices = (await qmp.execute("query-memory-devices")) as { data?: { id?: string } }[];
  return !devices.some((d) => d.data?.id === id);
}

/** A device id never used before in this VM: QEMU keeps some state of unplugged CPUs by id. */
function cpuId(slot: HotpluggableCpu, used: string[]): string {
  return `vcpu-${Object.values(slot.props).join("-")}-${Date.now().toString(36)}${used.length}`;
}

/** Brings the vCPU count to `target`; returns the new count. `state.cpus` follows each step. */
export async function resizeVcpus(
  qmp: QmpClient,
  state: HotplugState,
  bootVcpus: number,
  maxVcpus: number,
  target: number,
): Promise<number> {
  if (!Number.isInteger(target) || target < 1) throw limitError(`invalid vCPU count ${target}`);
  if (target > maxVcpus) {
    throw limitError(
      `cannot grow to ${target} vCPUs: this VM was started with at most ${maxVcpus} (default_maxvcpus)`,
      "create the sandbox with a larger default_maxvcpus (up to the host's CPUs)",
    );
  }
  if (target < bootVcpus) {
    throw limitError(
      `cannot shrink below the ${bootVcpus} vCPU(s) the VM booted with: only hot-plugged vCPUs can be removed`,
    );
  }
  let current = bootVcpus + state.cpus.length;
  if (target > current && state.cpuUnplugged) {
    throw new HypervisorError(
      "ERR_NOT_SUPPORTED",
      `cannot grow to ${target} vCPUs: a vCPU was unplugged from this VM, and QEMU 7.2 crashes when a vCPU is hot-plugged after that`,
      { hint: "create a new sandbox with the vCPUs it needs" },
    );
  }
  if (target > current) {
    const free = ((await qmp.execute("query-hotpluggable-cpus")) as HotpluggableCpu[])
      .filter((c) => !c["qom-path"])
      .sort((a, b) => JSON.stringify(a.props).localeCompare(JSON.stringify(b.props)));
    while (current < target) {
      const slot = free.shift();
      if (!slot) throw limitError(`no free CPU slot left at ${current} vCPUs`);
      const id = cpuId(slot, state.cpus);
      await qmp.execute("device_add", { driver: slot.type, id, ...slot.props });
      state.cpus.push(id);
      current++;
    }
  }
  while (current > target) {
    const id = state.cpus[state.cpus.length - 1]!;
    state.cpuUnplugged = true;
    await unplug(qmp, id, `vCPU ${id}`, () => cpuGone(qmp, id));
    state.cpus.pop();
    current--;
  }
  return current;
}

/** Brings guest memory to `targetMiB` (a multiple of the guest's block size past boot RAM). */
export async function resizeMemory(
  qmp: QmpClient,
  state: HotplugState,
  config: HypervisorConfig,
  targetMiB: number,
  blockSizeMiB: number,
): Promise<number> {
  const boot = config.memorySize;
  const current = boot + state.dimms.reduce((n, d) => n + d.sizeMiB, 0);
  const max = await maxMemoryMiB(config);
  if (targetMiB > max) {
    throw limitError(
      `cannot grow to ${targetMiB} MiB: the VM's memory ceiling is ${max} MiB (host memory or memory_offset)`,
    );
  }
  if (targetMiB < boot) {
    throw limitError(
      `cannot shrink below the ${boot} MiB the VM booted with: only hot-plugged memory can be removed`,
    );
  }
  if (targetMiB > current && state.memoryUnplugged) {
    throw new HypervisorError(
      "ERR_NOT_SUPPORTED",
      `cannot grow to ${targetMiB} MiB: memory was unplugged from this VM, and QEMU 7.2 crashes when memory is hot-plugged after that`,
      { hint: "create a new sandbox with the memory it needs" },
    );
  }
  if (targetMiB > current) {
    const delta = targetMiB - current;
    if (delta % blockSizeMiB !== 0) {
      throw limitError(
        `memory grows in steps of ${blockSizeMiB} MiB (the guest's memory block): ${delta} MiB is not one`,
        `ask for ${current + Math.ceil(delta / blockSizeMiB) * blockSizeMiB} MiB`,
      );
    }
    if (state.dimms.length >= config.memSlots) {
      throw limitError(
        `all ${config.memSlots} memory slots are in use`,
        "raise memory_slots for new sandboxes",
      );
    }
    const n = Math.max(0, ...state.dimms.map((d) => Number(d.id.slice("dimm".length)) + 1));
    const id = `dimm${n}`;
    await qmp.execute("object-add", {
      "qom-type": state.sharedMemory ? "memory-backend-memfd" : "memory-backend-ram",
      id: `mem-${id}`,
      size: delta * 1024 * 1024,
      ...(state.sharedMemory ? { share: true } : {}),
    });
    try {
      await qmp.execute("device_add", { driver: "pc-dimm", id, memdev: `mem-${id}` });
    } catch (err) {
      await qmp.execute("object-del", { id: `mem-${id}` }).catch(() => undefined);
      throw err;
    }
    state.dimms.push({ id, sizeMiB: delta });
    return targetMiB;
  }
  // Shrink: whole DIMMs, newest first, down to exactly the target.
  let total = current;
  const plan: string[] = [];
  for (const d of [...state.dimms].reverse()) {
    if (total - d.sizeMiB < targetMiB) break;
    total -= d.sizeMiB;
    plan.push(d.id);
  }
  if (total !== targetMiB) {
    throw limitError(
      `cannot shrink to ${targetMiB} MiB: memory comes out in the pieces it was added in (${state.dimms.map((d) => `${d.sizeMiB} MiB`).join(", ") || "none"}), so ${total} MiB is the nearest`,
    );
  }
  for (const id of plan) {
    state.memoryUnplugged = true;
    await unplug(qmp, id, `memory ${id}`, () => dimmGone(qmp, id));
    await qmp.execute("object-del", { id: `mem-${id}` });
    state.dimms = state.dimms.filter((d) => d.id !== id);
  }
  return total;
}
