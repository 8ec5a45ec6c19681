import { setTimeout as sleep } from "node:timers/promises";
import { HostError, isCocoonError } from "../errors.js";
import { runInNetns, tryInNetns } from "./netns.js";

/**
 * Kata's default "tcfilter" model: a tap next to the interface, an ingress qdisc on both and a
 * u32 match-all filter each way that redirects every frame to the other one. The guest NIC
 * takes the interface's MAC, so to the network the VM *is* that interface. The VMM, started
 * inside the namespace, opens the tap by name.
 */

export function tapName(index: number): string {
  return `tap${index}_cocoon`;
}

async function tc(nsPath: string, args: string[]): Promise<void> {
  // The kernel answers EBUSY while a qdisc on the device is still going away: retry a little.
  for (let attempt = 0; ; attempt++) {
    try {
      await runInNetns(nsPath, "tc", args);
      return;
    } catch (err) {
      if (attempt < 5 && isCocoonError(err) && /busy/i.test(err.message)) {
        await sleep(100 * (attempt + 1));
        continue;
      }
      throw err;
    }
  }
}

/** Creates `tap` mirroring `iface` both ways, with the interface's MTU. Undoes itself on failure. */
export async function mirrorInterface(
  nsPath: string,
  iface: string,
  tap: string,
  mtu: number,
): Promise<void> {
  await runInNetns(nsPath, "ip", ["tuntap", "add", "dev", tap, "mode", "tap"]);
  try {
    await runInNetns(nsPath, "ip", ["link", "set", "dev", tap, "mtu", String(mtu), "up"]);
    // The interface may still be down (a fresh veth in a given namespace): traffic needs it up.
    await runInNetns(nsPath, "ip", ["link", "set", "dev", iface, "up"]);
    await tc(nsPath, ["qdisc", "add", "dev", tap, "ingress"]);
    await tc(nsPath, ["qdisc", "replace", "dev", iface, "ingress"]);
    for (const [from, to] of [
      [iface, tap],
      [tap, iface],
    ] as const) {
      await tc(nsPath, [
        "filter",
        "add",
        "dev",
        from,
        "parent",
        "ffff:",
        "protocol",
        "all",
        "u32",
        "match",
        "u8",
        "0",
        "0",
        "action",
        "mirred",
        "egress",
        "redirect",
        "dev",
        to,
      ]);
    }
  } catch (err) {
    await unmirrorInterface(nsPath, iface, tap).catch(() => undefined);
    throw new HostError("ERR_PROCESS", `mirroring ${iface} to ${tap} failed: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Removes the filters, the interface's ingress qdisc and the tap; what is already gone is fine. */
export async function unmirrorInterface(nsPath: string, iface: string, tap: string): Promise<void> {
  await tryInNetns(nsPath, "tc", ["qdisc", "del", "dev", iface, "ingress"]);
  const res = await tryInNetns(nsPath, "ip", ["link", "del", "dev", tap]);
  if (res.code !== 0 && !/Cannot find device|does not exist/.test(res.stderr))
    throw new HostError("ERR_PROCESS", `removing ${tap} failed: ${res.stderr.trim()}`);
}

/** The ingress filters on a device (for tests and `network ls`). */
export async function ingressFilterCount(nsPath: string, dev: string): Promise<number> {
  const res = await tryInNetns(nsPath, "tc", ["-json", "filter", "show", "dev", dev, "ingress"]);
  if (res.code !== 0) return 0;
  const parsed = JSON.parse(res.stdout || "[]") as { options?: { actions?: unknown[] } }[];
  return parsed.filter((f) => f.options?.actions?.length).length;
}
