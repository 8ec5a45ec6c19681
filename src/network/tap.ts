import { access } from "node:fs/promises";
import { HostError } from "../errors.js";
import { runChecked, runCommand } from "../host/process.js";

/**
 * Network namespaces and tap devices through iproute2's `ip` (no shell). A namespace made with
 * `ip netns add NAME` has the handle /var/run/netns/NAME, which the jailer's --netns takes.
 */

export const NETNS_DIR = "/var/run/netns";

const NAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

function checkName(kind: string, name: string): string {
  if (!NAME_RE.test(name)) {
    throw new HostError(
      "ERR_INVALID_ARGUMENT",
      `invalid ${kind} name "${name}": 1-15 letters, digits, '_', '.' or '-'`,
    );
  }
  return name;
}

export function netnsPath(name: string): string {
  return `${NETNS_DIR}/${checkName("netns", name)}`;
}

export async function createNetns(name: string): Promise<string> {
  await runChecked("ip", ["netns", "add", checkName("netns", name)], { timeoutMs: 30_000 });
  return netnsPath(name);
}

/** Deletes a namespace; absent is fine. */
export async function deleteNetns(name: string): Promise<void> {
  const path = netnsPath(name);
  if (
    !(await access(path).then(
      () => true,
      () => false,
    ))
  )
    return;
  await runChecked("ip", ["netns", "delete", name], { timeoutMs: 30_000 });
}

/** Runs `ip <args>` inside namespace `netns` (or the current one). */
async function ipIn(netns: string | undefined, args: string[]): Promise<void> {
  await runChecked("ip", netns ? ["-netns", checkName("netns", netns), ...args] : args, {
    timeoutMs: 30_000,
  });
}

export interface TapOptions {
  /** Namespace the tap lives in (the VM's). */
  netns?: string;
  /** Host side address, e.g. "192.168.0.1/30". */
  address?: string;
  mtu?: number;
}

/** Creates a tap device, gives it an address and brings it up. */
export async function createTap(name: string, options: TapOptions = {}): Promise<void> {
  checkName("tap", name);
  await ipIn(options.netns, ["tuntap", "add", "dev", name, "mode", "tap"]);
  try {
    if (options.address) await ipIn(options.netns, ["addr", "add", options.address, "dev", name]);
    if (options.mtu) await ipIn(options.netns, ["link", "set", "dev", name, "mtu", String(options.mtu)]);
    await ipIn(options.netns, ["link", "set", "dev", name, "up"]);
  } catch (err) {
    await deleteTap(name, options.netns).catch(() => undefined);
    throw err;
  }
}

export async function deleteTap(name: string, netns?: string): Promise<void> {
  const res = await runCommand(
    "ip",
    [...(netns ? ["-netns", checkName("netns", netns)] : []), "link", "del", checkName("tap", name)],
    { timeoutMs: 30_000 },
  );
  if (res.code !== 0 && !/Cannot find device|does not exist/.test(res.stderr)) {
    throw new HostError("ERR_PROCESS", `ip link del ${name} failed: ${res.stderr.trim()}`);
  }
}

/** Whether an interface exists in a namespace. */
export async function linkExists(name: string, netns?: string): Promise<boolean> {
  const res = await runCommand(
    "ip",
    [...(netns ? ["-netns", checkName("netns", netns)] : []), "link", "show", checkName("tap", name)],
    { timeoutMs: 30_000 },
  );
  return res.code === 0;
}

/**
 * The guest MAC Firecracker's test framework derives from the guest IP: 06:00 followed by the
 * four octets in hex (192.168.0.2 → 06:00:C0:A8:00:02), so the guest can compute its own IP.
 */
export function macFromIp(ip: string): string {
  const octets = ip.split(".").map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) {
    throw new HostError("ERR_INVALID_ARGUMENT", `not an IPv4 address: ${ip}`);
  }
  return ["06", "00", ...octets.map((o) => o.toString(16).toUpperCase().padStart(2, "0"))].join(":");
}
