import { stat } from "node:fs/promises";
import { HypervisorError, errnoCode, messageOf } from "../errors.js";
import { netnsLaunchPrefix } from "../network/netns.js";

/**
 * Starting a VMM inside the sandbox's network namespace, the way the QEMU driver does: the
 * sandbox layer makes the taps in that namespace and the VMM opens them by name, so the VMM
 * must run there too. `nsenter --net=PATH -- vmm …` joins the namespace and then execs the VMM
 * in place (nsenter forks only when it enters a pid namespace), so the pid cocoon spawned is
 * the VMM's own pid: stop, check and the pid-reuse guard keep working unchanged.
 */

/** A program and its arguments, as handed to spawn. */
export interface LaunchCommand {
  file: string;
  args: string[];
}

/** `command` as run inside the namespace at `nsPath`; unchanged without one. */
export function launchInNetns(command: LaunchCommand, nsPath: string | undefined): LaunchCommand {
  if (nsPath === undefined) return command;
  return { file: "nsenter", args: [...netnsLaunchPrefix(nsPath), command.file, ...command.args] };
}

/**
 * Refuses a namespace path the VMM could not join, before anything is spawned: nsenter (or the
 * jailer) would otherwise fail after cocoon has built the jail or the VM directory, with a
 * message about setns. A namespace handle is a file on nsfs (the filesystem of
 * /proc/self/ns/*); a leftover empty file in /var/run/netns, whose bind mount is gone, is not.
 */
export async function requireNetns(nsPath: string, vmm: string): Promise<void> {
  const refuse = (why: string, cause?: unknown) =>
    new HypervisorError(
      "ERR_INVALID_ARGUMENT",
      `${vmm} cannot join the network namespace ${nsPath}: ${why}`,
      {
        details: { netns: nsPath },
        hint: "the sandbox's network namespace must exist until its VM has started (ip netns list)",
        ...(cause !== undefined ? { cause } : {}),
      },
    );
  let handle: Awaited<ReturnType<typeof stat>>;
  try {
    handle = await stat(nsPath);
  } catch (err) {
    throw refuse(errnoCode(err) === "ENOENT" ? "it does not exist" : messageOf(err), err);
  }
  const nsfs = await stat("/proc/self/ns/net");
  if (handle.dev !== nsfs.dev) throw refuse("it is not a namespace handle (not a file on nsfs)");
}
