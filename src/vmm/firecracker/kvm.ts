import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import { HypervisorError, errnoCode } from "../../errors.js";
import { FirecrackerConnectionError } from "./errors.js";

/** Where Firecracker opens KVM (the jailer makes the same device node inside the jail). */
export const DEFAULT_KVM_DEVICE = "/dev/kvm";

const KVM_HINT =
  "Firecracker runs guests only with KVM: run on a host (or a VM with nested virtualization) that " +
  "has /dev/kvm, load the kvm module, and let the user that launches Firecracker open it read-write " +
  "(the kvm group, or an ACL: setfacl -m u:<user>:rw /dev/kvm)";

/**
 * Refuses to boot where Firecracker cannot open KVM. Without it, Firecracker 1.0 aborts in the
 * middle of InstanceStart (the client only sees the connection close) and later versions refuse
 * it; either way the cause is clearer before anything is launched.
 */
export async function requireKvm(device = DEFAULT_KVM_DEVICE): Promise<void> {
  let why: string | undefined;
  try {
    const st = await stat(device);
    if (!st.isCharacterDevice()) why = `${device} is not a character device`;
    else await access(device, constants.R_OK | constants.W_OK);
  } catch (err) {
    why =
      errnoCode(err) === "ENOENT"
        ? `${device} does not exist: this host has no KVM`
        : `${device} cannot be opened read-write by uid ${process.getuid?.() ?? "?"}`;
  }
  if (why)
    throw new HypervisorError("ERR_VMM_START", `Firecracker cannot boot a guest: ${why}`, {
      details: { kvmDevice: device },
      hint: KVM_HINT,
    });
}

/**
 * The error for a failed InstanceStart. When Firecracker died answering it (v1.0 panics when it
 * cannot create its KVM object), the client only saw the connection close: what Firecracker
 * said is in its log, so the panic line (or the log's tail) becomes the message.
 */
export function instanceStartFailure(err: unknown, exited: boolean, log: string): unknown {
  if (!exited || !(err instanceof FirecrackerConnectionError)) return err;
  const lines = log.split("\n").filter((l) => l.trim() !== "");
  const said = lines.filter((l) => /panicked|Error|error/.test(l)).slice(-3);
  const text = (said.length ? said : lines.slice(-5)).join("\n") || "(its log is empty)";
  return new HypervisorError("ERR_VMM_EXITED", `Firecracker died during InstanceStart: ${text}`, {
    cause: err,
    details: { socketPath: err.socketPath },
    ...(/kvm/i.test(text) ? { hint: KVM_HINT } : {}),
  });
}
