import { createServer } from "node:net";
import { createSocket } from "node:dgram";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { ConfigError, errnoCode } from "../errors.js";
import { runChecked } from "../host/process.js";
import { cidrsOverlap, nthAddress, parseCidr, type Cidr } from "./cidr.js";
import type { Conflist } from "./cni.js";
import type { PortMapping } from "./ports.js";

/**
 * cocoon's standalone network, on the real CNI plugins: a `cocoon0` bridge that is the
 * sandboxes' gateway and masquerades their egress, host-local IPAM with its leases under the
 * state root, and portmap for `-p`.
 */

export const BRIDGE_NAME = "cocoon0";
export const DEFAULT_SUBNET = "10.88.0.0/16";
export const NETWORK_NAME = "cocoon";

export function bridgeConflist(stateRoot: string, subnet: Cidr): Conflist {
  return {
    cniVersion: "1.0.0",
    name: NETWORK_NAME,
    plugins: [
      {
        type: "bridge",
        bridge: BRIDGE_NAME,
        isGateway: true,
        ipMasq: true,
        hairpinMode: true,
        ipam: {
          type: "host-local",
          ranges: [[{ subnet: subnet.text, gateway: nthAddress(subnet, 1) }]],
          routes: [{ dst: "0.0.0.0/0" }],
          dataDir: path.join(stateRoot, "cni", "ipam"),
        },
      },
      { type: "portmap", capabilities: { portMappings: true }, snat: true },
    ],
  };
}

const routesSchema = z.array(z.object({ dst: z.string(), dev: z.string().optional() }).passthrough());

/**
 * The subnet must not overlap a route of this host that is not the bridge's own: the sandboxes
 * would shadow (or be shadowed by) a network the host already reaches.
 */
export async function checkSubnetFree(subnet: Cidr): Promise<void> {
  const res = await runChecked("ip", ["-json", "-4", "route", "show", "table", "all"], { timeoutMs: 30_000 });
  for (const r of routesSchema.parse(JSON.parse(res.stdout || "[]"))) {
    if (r.dst === "default" || r.dev === BRIDGE_NAME || r.dev === "lo") continue;
    let dst: Cidr;
    try {
      dst = parseCidr(r.dst.includes("/") ? r.dst : `${r.dst}/32`);
    } catch {
      continue; // broadcast/local entries in other notations
    }
    if (dst.prefix === 32 && r.dst.startsWith("127.")) continue;
    if (cidrsOverlap(dst, subnet)) {
      throw new ConfigError(
        "ERR_INVALID_CONFIG",
        `the sandbox subnet ${subnet.text} overlaps the host route ${r.dst}${r.dev ? ` (dev ${r.dev})` : ""}`,
        {
          hint: "choose another subnet for cocoon's bridge network",
          details: { subnet: subnet.text, route: r.dst },
        },
      );
    }
  }
}

/** A published host port must be free now: bind it for a moment (tcp or udp). */
export async function checkPortFree(p: PortMapping): Promise<void> {
  const host = p.hostIP ?? "0.0.0.0";
  const taken = (err: unknown): Error =>
    new ConfigError(
      "ERR_INVALID_ARGUMENT",
      `host port ${host}:${p.hostPort}/${p.protocol} is not available (${errnoCode(err) ?? String(err)})`,
      { details: { port: p.hostPort, protocol: p.protocol } },
    );
  await new Promise<void>((resolve, reject) => {
    if (p.protocol === "udp") {
      const s = createSocket("udp4");
      s.once("error", (err) => {
        s.close();
        reject(taken(err));
      });
      s.bind(p.hostPort, host, () => s.close(() => resolve()));
    } else {
      const s = createServer();
      s.once("error", (err) => reject(taken(err)));
      s.listen(p.hostPort, host, () => s.close(() => resolve()));
    }
  });
}

/** The host's nameservers a guest can use: loopback ones (a local resolver) cannot be reached. */
export async function hostNameservers(resolvConf = "/etc/resolv.conf"): Promise<string[]> {
  const text = await readFile(resolvConf, "utf8").catch(() => "");
  return text
    .split("\n")
    .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
    .filter((ns): ns is string => !!ns && !ns.startsWith("127.") && ns !== "::1");
}
