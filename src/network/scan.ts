import { z } from "zod";
import { runInNetns } from "./netns.js";

/**
 * What a namespace holds, read through `ip -json`: the interfaces a VM should get (a veth from
 * CNI, typically) with their addresses, MAC and MTU, and the routes. Loopback and the taps
 * cocoon itself made are not endpoints.
 */

const ipAddrSchema = z.array(
  z
    .object({
      ifname: z.string(),
      mtu: z.number().optional(),
      address: z.string().optional(),
      link_type: z.string().optional(),
      flags: z.array(z.string()).default([]),
      linkinfo: z.object({ info_kind: z.string().optional() }).passthrough().optional(),
      addr_info: z
        .array(
          z
            .object({
              family: z.string(),
              local: z.string(),
              prefixlen: z.number(),
              scope: z.string().optional(),
            })
            .passthrough(),
        )
        .default([]),
    })
    .passthrough(),
);

const ipRouteSchema = z.array(
  z
    .object({
      dst: z.string(),
      gateway: z.string().optional(),
      dev: z.string().optional(),
      scope: z.string().optional(),
      prefsrc: z.string().optional(),
      protocol: z.string().optional(),
    })
    .passthrough(),
);

export interface ScannedInterface {
  name: string;
  mac: string;
  mtu: number;
  /** "10.88.0.2/16" */
  addresses: string[];
  /** The kind the kernel reports (veth, macvlan, ...), if any. */
  kind?: string;
}

export interface ScannedRoute {
  /** "default" or a CIDR */
  dest: string;
  gateway?: string;
  device?: string;
  scope?: string;
  source?: string;
}

export interface NamespaceScan {
  interfaces: ScannedInterface[];
  routes: ScannedRoute[];
}

/** A tap cocoon made: never an endpoint itself. */
export function isCocoonTap(name: string): boolean {
  return /^tap\d+_cocoon$/.test(name);
}

export function parseScan(addrJson: string, routeJson: string): NamespaceScan {
  const links = ipAddrSchema.parse(JSON.parse(addrJson));
  const interfaces: ScannedInterface[] = [];
  for (const l of links) {
    if (l.link_type !== "ether" || !l.address || isCocoonTap(l.ifname)) continue;
    if (l.linkinfo?.info_kind === "tun") continue;
    interfaces.push({
      name: l.ifname,
      mac: l.address,
      mtu: l.mtu ?? 1500,
      addresses: l.addr_info
        .filter((a) => (a.family === "inet" || a.family === "inet6") && a.scope !== "link")
        .map((a) => `${a.local}/${a.prefixlen}`),
      ...(l.linkinfo?.info_kind ? { kind: l.linkinfo.info_kind } : {}),
    });
  }
  const names = new Set(interfaces.map((i) => i.name));
  const routes = ipRouteSchema
    .parse(JSON.parse(routeJson))
    .filter((r) => !r.dev || names.has(r.dev))
    .map((r): ScannedRoute => ({
      dest: r.dst,
      ...(r.gateway ? { gateway: r.gateway } : {}),
      ...(r.dev ? { device: r.dev } : {}),
      ...(r.scope ? { scope: r.scope } : {}),
      ...(r.prefsrc ? { source: r.prefsrc } : {}),
    }));
  return { interfaces, routes };
}

/** Scans the namespace at `nsPath` (IPv4 routes; IPv4 and IPv6 addresses). */
export async function scanNamespace(nsPath: string): Promise<NamespaceScan> {
  const addr = await runInNetns(nsPath, "ip", ["-json", "-details", "address", "show"]);
  const route = await runInNetns(nsPath, "ip", ["-json", "-4", "route", "show"]);
  return parseScan(addr.stdout, route.stdout);
}
