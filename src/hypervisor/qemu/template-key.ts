import { createHash } from "node:crypto";
import { chooseAccelerator } from "../../host/accel.js";
import { hostTscKhz } from "../../host/proc.js";
import { buildQemuArgs } from "../../vmm/qemu/cmdline.js";
import { assetPath, type HypervisorConfig } from "../config.js";
import { fileIdentity } from "../file-identity.js";
import { QemuHypervisor } from "./driver.js";

/** A placeholder VM directory: per-VM socket paths must not change the key. */
const KEY_VM_DIR = "/cocoon-template-key";

/**
 * Everything that shapes a template VM, hashed: the QEMU command line it would get (machine,
 * vCPUs, memory, devices in order, kernel parameters) and the identity of the QEMU binary,
 * the kernel and the rootfs (which holds the agent). A clone is only made from a template
 * whose key matches; anything else is rebuilt.
 */
export async function qemuTemplateKey(
  config: HypervisorConfig,
  extra: Record<string, string> = {},
): Promise<string> {
  const driver = new QemuHypervisor();
  await driver.createVM({ id: "template", config, paths: { vmDir: KEY_VM_DIR, jailerBase: KEY_VM_DIR } });
  const accel = await chooseAccelerator(config.accelerator);
  const args = buildQemuArgs(await driver.buildSpec(accel.accelerator, await hostTscKhz()));
  const files: string[] = [];
  for (const type of ["hypervisor", "kernel", "image", "initrd"] as const) {
    const p = assetPath(config, type);
    if (p) files.push(await fileIdentity(p));
  }
  return createHash("sha256").update(JSON.stringify({ args, files, extra })).digest("hex").slice(0, 24);
}
