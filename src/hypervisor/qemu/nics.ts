import { access } from "node:fs/promises";
import { z } from "zod";
import { HypervisorError } from "../../errors.js";
import type { NetDevice } from "../devices.js";
import { virtioDevice, type QemuMachineType, type QemuNic } from "../../vmm/qemu/cmdline.js";
import type { QmpClient } from "../../vmm/qemu/qmp.js";

/**
 * NICs on QEMU: a tap opened by name (QEMU runs inside the sandbox's network namespace, so
 * no file descriptor has to be passed), virtio-net on MMIO for microvm and PCI elsewhere.
 * Cold-plugged NICs sit on the root bus; hot-plugged ones (q35 only: microvm has no PCI
 * hotplug) take a free PCIe root port.
 */

export const nicSlotSchema = z.object({
  id: z.string(),
  tap: z.string(),
  mac: z.string(),
  /** The PCIe root port a hot-plugged NIC sits in. */
  port: z.number().int().nonnegative().optional(),
});
export type NicSlot = z.infer<typeof nicSlotSchema>;

/** vhost-net needs KVM and /dev/vhost-net; under TCG the in-QEMU backend is the one that works. */
export async function vhostUsable(accel: "kvm" | "tcg"): Promise<boolean> {
  if (accel !== "kvm") return false;
  return access("/dev/vhost-net").then(
    () => true,
    () => false,
  );
}

export function checkNetDevice(d: NetDevice): void {
  if (!/^[A-Za-z0-9_-]{1,24}$/.test(d.id))
    throw new HypervisorError(
      "ERR_INVALID_ARGUMENT",
      `invalid NIC id "${d.id}": 1-24 letters, digits, '_' or '-'`,
    );
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(d.tapName))
    throw new HypervisorError("ERR_INVALID_ARGUMENT", `invalid tap name "${d.tapName}"`);
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(d.mac))
    throw new HypervisorError("ERR_INVALID_ARGUMENT", `invalid MAC address "${d.mac}"`);
}

export function coldNic(d: NetDevice, vhost: boolean): QemuNic {
  return { id: `net-${d.id}`, ifname: d.tapName, mac: d.mac, vhost };
}

/** Hot-plugs a NIC into a free root port; undoes the netdev if the device is refused. */
export async function hotplugNic(
  qmp: QmpClient,
  machine: QemuMachineType,
  d: NetDevice,
  slots: NicSlot[],
  rootPorts: number,
  vhost: boolean,
): Promise<NicSlot> {
  if (machine === "microvm") {
    throw new HypervisorError(
      "ERR_NOT_SUPPORTED",
      "the microvm machine has no PCI hotplug: NICs cannot be added live",
      {
        hint: 'create the sandbox with machine_type = "q35" to hot-plug network interfaces',
      },
    );
  }
  if (slots.some((s) => s.id === d.id))
    throw new HypervisorError("ERR_ALREADY_EXISTS", `a NIC with id ${d.id} is already attached`);
  const used = new Set(slots.map((s) => s.port));
  let port = 0;
  while (used.has(port)) port++;
  if (port >= rootPorts)
    throw new HypervisorError("ERR_RESOURCE_EXHAUSTED", `all ${rootPorts} PCIe root ports are in use`, {
      hint: "raise default_bridges in the QEMU configuration",
    });
  const netdev = `net-${d.id}`;
  await qmp.execute("netdev_add", {
    type: "tap",
    id: netdev,
    ifname: d.tapName,
    script: "no",
    downscript: "no",
    vhost,
  });
  try {
    await qmp.execute("device_add", {
      driver: virtioDevice(machine, "net"),
      id: `dev-${netdev}`,
      netdev,
      mac: d.mac,
      bus: `rp${port}`,
    });
  } catch (err) {
    await qmp.execute("netdev_del", { id: netdev }).catch(() => undefined);
    throw err;
  }
  return { id: d.id, tap: d.tapName, mac: d.mac, port };
}

export async function hotunplugNic(qmp: QmpClient, slot: NicSlot): Promise<void> {
  const netdev = `net-${slot.id}`;
  const deleted = qmp.waitForEvent("DEVICE_DELETED", (e) => e.device === `dev-${netdev}`, 30_000);
  deleted.catch(() => undefined);
  await qmp.execute("device_del", { id: `dev-${netdev}` });
  await deleted;
  await qmp.execute("netdev_del", { id: netdev });
}
