import { HypervisorError } from "../../errors.js";
import type { Jail, JailStrategy } from "../../vmm/firecracker/jail.js";

/**
 * Puts a file into the jail of a running Firecracker and checks, through /proc/<pid>/root,
 * that Firecracker sees it there; returns the path to give Firecracker.
 *
 * Firecracker runs in a mount namespace of its own (the jailer's). A bind mount made in the
 * jail after the jailer started reaches it only when the jail is on a shared mount; on a host
 * whose mounts are private (the usual case) Firecracker would open the empty placeholder and
 * the guest would get an empty disk (or no kernel). A hard link is always seen. When the file
 * is not the one Firecracker sees, it is taken out again and the call refused, saying what works.
 * ("auto", the default, tries a hard link first.)
 */
export async function placeForFirecracker(
  jail: Jail,
  firecrackerPid: number,
  source: string,
  jailPath: string,
  o: { readOnly: boolean; strategy: JailStrategy },
): Promise<string> {
  const fcPath = await jail.put(source, jailPath, { readOnly: o.readOnly, strategy: o.strategy });
  if (await jail.seenBy(firecrackerPid, jailPath)) return fcPath;
  const method = jail.resources().find((r) => r.jailPath === jailPath)?.method ?? "bind";
  await jail.remove(jailPath).catch(() => undefined);
  throw new HypervisorError(
    "ERR_NOT_SUPPORTED",
    `cannot give ${source} to Firecracker: after ${method === "bind" ? "bind-mounting" : "placing"} it at ` +
      `${jail.hostPath(jailPath)}, the running Firecracker (pid ${firecrackerPid}) does not see it at ${jailPath} ` +
      "(a mount made after the jailer started does not reach Firecracker's mount namespace when the host's mounts are private)",
    {
      details: { source, jailPath, method, pid: firecrackerPid },
      hint:
        "put the file on the filesystem of the jailer base directory so that it can be hard-linked " +
        '(jail_resources "auto" or "link"), or make the jailer base a shared mount ' +
        "(mount --bind <base> <base> && mount --make-rshared <base>) before starting the VM",
    },
  );
}
