import { readdir, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import type { GuestInterface, GuestRoute, HostEntry } from "../../agent/protocol/methods.js";
import type { Handlers } from "./dispatch.js";
import { AgentOpError } from "./errors.js";
import { run } from "./run.js";

/**
 * The guest side of networking (Kata's UpdateInterface / UpdateRoutes / ListInterfaces /
 * ListRoutes), done with busybox `ip`. The host names NICs by MAC: the guest NIC carries the MAC
 * of the host interface it mirrors, and PCI or MMIO order says nothing about which is which.
 * Containers share the guest's network (they get no network namespace of their own).
 */

const SYS_NET = "/sys/class/net";
const RTF_GATEWAY = 0x2;

async function readSys(name: string, file: string): Promise<string> {
  return (await readFile(`${SYS_NET}/${name}/${file}`, "utf8").catch(() => "")).trim();
}

async function linkByMac(mac: string): Promise<string> {
  for (const name of await readdir(SYS_NET).catch(() => [] as string[])) {
    if ((await readSys(name, "address")).toLowerCase() === mac.toLowerCase()) return name;
  }
  throw new AgentOpError("NOT_FOUND", `the guest has no network interface with MAC ${mac}`);
}

async function describe(name: string): Promise<GuestInterface> {
  const flags = Number.parseInt((await readSys(name, "flags")) || "0", 16);
  const addrs = os.networkInterfaces()[name] ?? [];
  return {
    name,
    mac: await readSys(name, "address"),
    mtu: Number((await readSys(name, "mtu")) || 0),
    up: (flags & 1) === 1,
    addresses: addrs.filter((a) => !a.address.startsWith("fe80")).map((a) => a.cidr ?? a.address),
  };
}

/** /proc/net/route: hex little-endian IPv4 addresses. */
function hexIp(hex: string): string {
  const n = Number.parseInt(hex, 16);
  return [0, 8, 16, 24].map((s) => (n >>> s) & 255).join(".");
}

function prefixOf(maskHex: string): number {
  let n = Number.parseInt(maskHex, 16) >>> 0;
  let bits = 0;
  while (n) {
    bits += n & 1;
    n >>>= 1;
  }
  return bits;
}

export function parseProcRoutes(text: string): (GuestRoute & { kernel: boolean })[] {
  const out: (GuestRoute & { kernel: boolean })[] = [];
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [dev, dst, gw, flagsHex, , , , mask] = f as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    const flags = Number.parseInt(flagsHex, 16);
    const prefix = prefixOf(mask);
    const gateway = flags & RTF_GATEWAY ? hexIp(gw) : undefined;
    out.push({
      dest: prefix === 0 && hexIp(dst) === "0.0.0.0" ? "default" : `${hexIp(dst)}/${prefix}`,
      device: dev,
      ...(gateway ? { gateway } : { scope: "link" as const }),
      // A link route without a gateway is the kernel's own (from an address): leave it alone.
      kernel: !gateway,
    });
  }
  return out;
}

async function listRoutes(): Promise<(GuestRoute & { kernel: boolean })[]> {
  return parseProcRoutes(await readFile("/proc/net/route", "utf8").catch(() => ""));
}

function routeArgs(r: GuestRoute): string[] {
  return [
    r.dest,
    ...(r.gateway ? ["via", r.gateway] : []),
    ...(r.device ? ["dev", r.device] : []),
    ...(r.scope ? ["scope", r.scope] : []),
    ...(r.source ? ["src", r.source] : []),
  ];
}

/** Extra /etc/hosts lines (--add-host); containers created later get them too. */
let extraHosts: HostEntry[] = [];
export function extraHostsText(): string {
  return extraHosts.map((h) => `${h.ip}\t${h.name}\n`).join("");
}

export function networkHandlers(hostsBase: () => string): Handlers {
  return {
    "network.updateInterface": async (p) => {
      const current = await linkByMac(p.mac);
      await run("ip", ["link", "set", "dev", current, "down"]);
      const name = p.name ?? current;
      if (name !== current) await run("ip", ["link", "set", "dev", current, "name", name]);
      await run("ip", ["addr", "flush", "dev", name]);
      if (p.mtu) await run("ip", ["link", "set", "dev", name, "mtu", String(p.mtu)]);
      for (const a of p.addresses) await run("ip", ["addr", "add", a, "dev", name]);
      await run("ip", ["link", "set", "dev", name, "up"]);
      return describe(name);
    },
    "network.removeInterface": async (p) => {
      const name = await linkByMac(p.mac);
      await run("ip", ["addr", "flush", "dev", name]);
      await run("ip", ["link", "set", "dev", name, "down"]);
      return {};
    },
    "network.updateRoutes": async (p) => {
      for (const r of await listRoutes()) if (!r.kernel) await run("ip", ["route", "del", ...routeArgs(r)]);
      // Link routes first: a gateway must be reachable before a route can use it.
      const ordered = [...p.routes.filter((r) => !r.gateway), ...p.routes.filter((r) => r.gateway)];
      for (const r of ordered) await run("ip", ["route", "replace", ...routeArgs(r)]);
      return { routes: (await listRoutes()).map(({ kernel: _, ...r }) => r) };
    },
    "network.listInterfaces": async () => {
      const names = (await readdir(SYS_NET).catch(() => [] as string[])).sort();
      return { interfaces: await Promise.all(names.map(describe)) };
    },
    "network.listRoutes": async () => ({ routes: (await listRoutes()).map(({ kernel: _, ...r }) => r) }),
    "network.setHosts": async (p) => {
      extraHosts = p.entries;
      await writeFile("/run/hosts", hostsBase() + extraHostsText());
      return {};
    },
  };
}
