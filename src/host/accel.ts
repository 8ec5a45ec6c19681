import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import type { Accelerator } from "../hypervisor/types.js";

export interface AccelProbePaths {
  kvmDevice: string;
  /** Present when the host KVM is PVM (pagetable virtual machine), which only runs PVM guests. */
  pvmModule: string;
}

export const DEFAULT_ACCEL_PATHS: AccelProbePaths = {
  kvmDevice: "/dev/kvm",
  pvmModule: "/sys/module/kvm_pvm",
};

export interface AccelChoice {
  /** What QEMU will be told to use. */
  accelerator: "kvm" | "tcg";
  requested: Accelerator;
  kvmPresent: boolean;
  kvmUsable: boolean;
  pvmHost: boolean;
  /** One sentence on why, for `cocoon check` and error messages. */
  reason: string;
  /** Set when the choice is likely to fail (e.g. kvm forced on a PVM host). */
  warning?: string;
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Decides between KVM and TCG. `auto` uses KVM only where a normal guest kernel can run under
 * it: /dev/kvm must be usable and the host must not be PVM (a non-PVM guest kernel hangs
 * silently under PVM right after real mode).
 */
export async function chooseAccelerator(
  requested: Accelerator,
  paths: AccelProbePaths = DEFAULT_ACCEL_PATHS,
): Promise<AccelChoice> {
  const kvmPresent = await exists(paths.kvmDevice);
  let kvmUsable = false;
  if (kvmPresent) {
    try {
      const st = await stat(paths.kvmDevice);
      await access(paths.kvmDevice, constants.R_OK | constants.W_OK);
      kvmUsable = st.isCharacterDevice();
    } catch {
      kvmUsable = false;
    }
  }
  const pvmHost = await exists(paths.pvmModule);
  const base = { requested, kvmPresent, kvmUsable, pvmHost };
  const pvmWarning =
    `the host KVM is PVM (${paths.pvmModule} exists): only PVM-enabled guest kernels boot under it, ` +
    `and a normal guest kernel hangs silently; use accelerator "tcg" or "auto"`;

  if (requested === "tcg") {
    return { ...base, accelerator: "tcg", reason: "TCG emulation was requested" };
  }
  if (requested === "kvm") {
    if (!kvmUsable) {
      return {
        ...base,
        accelerator: "kvm",
        reason: "KVM was requested",
        warning: kvmPresent
          ? `${paths.kvmDevice} exists but cannot be opened read-write by this user`
          : `${paths.kvmDevice} does not exist (no KVM on this host)`,
      };
    }
    return pvmHost
      ? { ...base, accelerator: "kvm", reason: "KVM was requested", warning: pvmWarning }
      : { ...base, accelerator: "kvm", reason: "KVM was requested" };
  }
  if (!kvmPresent) {
    return {
      ...base,
      accelerator: "tcg",
      reason: `${paths.kvmDevice} does not exist, so TCG emulation is used`,
    };
  }
  if (!kvmUsable) {
    return {
      ...base,
      accelerator: "tcg",
      reason: `${paths.kvmDevice} cannot be opened read-write by this user, so TCG emulation is used`,
    };
  }
  if (pvmHost) {
    return {
      ...base,
      accelerator: "tcg",
      reason: `this is a PVM host (${paths.pvmModule} exists): a normal guest kernel would hang under its KVM, so TCG emulation is used`,
    };
  }
  return { ...base, accelerator: "kvm", reason: `${paths.kvmDevice} is usable and the host is not PVM` };
}
