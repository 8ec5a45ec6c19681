import { HypervisorError } from "../../errors.js";
import type { FirecrackerClient } from "../../vmm/firecracker/client.js";
import { FirecrackerApiError } from "../../vmm/firecracker/errors.js";

/**
 * Memory resize on Firecracker. Firecracker 1.x cannot add memory to a booted VM, but a virtio
 * balloon configured before boot can take memory from the guest and give it back, so the
 * reachable sizes are 0 < size <= the boot size. The balloon does not deflate on OOM: that
 * way the guest's MemTotal follows the balloon (the kernel removes inflated pages from the
 * managed count), as it follows a DIMM on QEMU, and a size the user asked for stays set.
 */

/** What configureAndBoot sends before InstanceStart when `balloon = true`. */
export async function configureBalloon(client: FirecrackerClient): Promise<void> {
  await client.putBalloon({ amount_mib: 0, deflate_on_oom: false, stats_polling_interval_s: 0 });
}

/** The balloon size that leaves the guest `targetMiB` of its `bootMiB`, or a clear refusal. */
export function balloonAmountFor(bootMiB: number, targetMiB: number, enabled: boolean): number {
  if (!Number.isInteger(targetMiB) || targetMiB < 1) {
    throw new HypervisorError("ERR_INVALID_ARGUMENT", `invalid memory size ${targetMiB} MiB`, {
      details: { memoryMB: targetMiB },
    });
  }
  if (!enabled) {
    throw new HypervisorError(
      "ERR_NOT_SUPPORTED",
      "Firecracker cannot change the memory of a running VM that booted without a balloon",
      { hint: "set balloon = true in [hypervisor.firecracker] for sandboxes whose memory shrinks" },
    );
  }
  if (targetMiB > bootMiB) {
    throw new HypervisorError(
      "ERR_NOT_SUPPORTED",
      `Firecracker cannot grow a running VM past the ${bootMiB} MiB it booted with (asked for ${targetMiB} MiB): the balloon can only take memory back and return it`,
      {
        hint: "create the sandbox with the largest memory it will need, then shrink it",
        details: { bootMiB },
      },
    );
  }
  return bootMiB - targetMiB;
}

/** Sets the balloon's target; Firecracker's own refusal (no driver in the guest, …) is kept. */
export async function setBalloon(client: FirecrackerClient, amountMib: number): Promise<void> {
  try {
    await client.patchBalloon({ amount_mib: amountMib });
  } catch (err) {
    if (err instanceof FirecrackerApiError) {
      throw new HypervisorError(
        "ERR_VMM_API",
        `Firecracker refused to set the balloon to ${amountMib} MiB: ${err.faultMessage}`,
        { cause: err, details: { amountMib } },
      );
    }
    throw err;
  }
}
