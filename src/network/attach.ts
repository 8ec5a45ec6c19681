import { z } from "zod";
import { HostError } from "../errors.js";
import { applyEgressPolicy, removeEgressPolicy, type EgressPolicy } from "./egress.js";
import { mirrorInterface, tapName, unmirrorInterface } from "./mirror.js";
import { pathExists } from "./netns.js";
import { scanNamespace, type ScannedRoute } from "./scan.js";

/**
 * Attaching a network namespace to a VM, whoever made the namespace (cocoon's bridge network,
 * `--network ns:PATH`, later the containerd shim with a pod's): scan it, and for each
 * interface make a tap mirroring it. The result says what the VMM and the guest need: the taps
 * with the interfaces' MACs, and the addresses, MTUs and routes to configure in the guest.
 */

export const endpointSchema = z.object({
  /** The interface in the namespace (a veth, typically), and the guest NIC's name. */
  iface: z.string(),
  tap: z.string(),
  mac: z.string(),
  mtu: z.number(),
  addresses: z.array(z.string()),
  /** The tap→interface direction goes through the egress policy (nftables), not tc. */
  egress: z.boolean().default(false),
});
export type Endpoint = z.infer<typeof endpointSchema>;

export interface AttachedNamespace {
  endpoints: Endpoint[];
  routes: ScannedRoute[];
}

export interface AttachOptions {
  egress?: EgressPolicy;
  /** DNS servers the guest may always reach under `egress: deny`. */
  nameservers?: string[];
  /** First tap index (hotplug adds after the existing ones). */
  firstIndex?: number;
  /** Only these interfaces (hotplug); default: every one found. */
  only?: string[];
  /**
   * Called with each endpoint before its tap exists, so a caller can record it first
   * (crash safety: nothing may exist that no record names).
   */
  onEndpoint?: (e: Endpoint) => Promise<void>;
}

export async function attachNamespace(
  nsPath: string,
  options: AttachOptions = {},
): Promise<AttachedNamespace> {
  if (!(await pathExists(nsPath))) {
    throw new HostError("ERR_INVALID_ARGUMENT", `the network namespace ${nsPath} does not exist`, {
      details: { netns: nsPath },
    });
  }
  const scan = await scanNamespace(nsPath);
  const wanted = scan.interfaces.filter((i) => !options.only || options.only.includes(i.name));
  const endpoints: Endpoint[] = [];
  try {
    let index = options.firstIndex ?? 0;
    for (const i of wanted) {
      const egress = options.egress?.mode === "deny";
      const e: Endpoint = {
        iface: i.name,
        tap: tapName(index++),
        mac: i.mac,
        mtu: i.mtu,
        addresses: i.addresses,
        egress,
      };
      await options.onEndpoint?.(e);
      endpoints.push(e);
      await mirrorInterface(nsPath, e.iface, e.tap, e.mtu);
      if (egress) await applyEgressPolicy(nsPath, e.tap, e.iface, options.egress!, options.nameservers ?? []);
    }
  } catch (err) {
    await detachNamespace(nsPath, endpoints).catch(() => undefined);
    throw err;
  }
  const names = new Set(endpoints.map((e) => e.iface));
  return { endpoints, routes: scan.routes.filter((r) => !r.device || names.has(r.device)) };
}

/** Undoes attachNamespace: egress chains, tc and taps. A namespace already gone is fine. */
export async function detachNamespace(nsPath: string, endpoints: Endpoint[]): Promise<void> {
  if (!(await pathExists(nsPath))) return;
  let first: unknown;
  for (const e of [...endpoints].reverse()) {
    try {
      if (e.egress) await removeEgressPolicy(nsPath, e.tap);
      await unmirrorInterface(nsPath, e.iface, e.tap);
    } catch (err) {
      first ??= err;
    }
  }
  if (first) throw first;
}
