import { readdir } from "node:fs/promises";
import { z } from "zod";
import type { AgentClient } from "../agent/client.js";
import { hostEntrySchema, type GuestInterface, type GuestRoute } from "../agent/protocol/methods.js";
import { ConfigError, HostError, SandboxError } from "../errors.js";
import type { Hypervisor } from "../hypervisor/hypervisor.js";
import { tapName } from "../network/mirror.js";
import type { NetDevice } from "../hypervisor/devices.js";
import { attachNamespace, detachNamespace, endpointSchema, type Endpoint } from "../network/attach.js";
import { bridgeConflist, checkPortFree, checkSubnetFree, DEFAULT_SUBNET } from "../network/bridge.js";
import { parseCidr } from "../network/cidr.js";
import {
  checkPlugins,
  cniAdd,
  cniDel,
  cniResultSchema,
  conflistSchema,
  type CniRuntime,
} from "../network/cni.js";
import { parseEgressRule, type EgressPolicy } from "../network/egress.js";
import {
  createNamedNetns,
  deleteNamedNetns,
  NETNS_DIR,
  netnsNamePrefix,
  pathExists,
  sandboxNetnsName,
} from "../network/netns.js";
import { checkPortClashes, portMappingSchema, type PortMapping } from "../network/ports.js";
import type { ScannedRoute } from "../network/scan.js";
import { runCommand } from "../host/process.js";
import type { DocumentKind } from "../store/atomic.js";
import type { SandboxContext } from "./sandbox.js";

/**
 * A sandbox's network: what the user asked for (the spec, in the sandbox config) and what was
 * made for it (the record, `<sandbox>/network.json`). The record is written *before* each
 * thing it names is made — the namespace, the CNI attachment, each tap — so `rm -f`, `gc`
 * and stop tear down what a crashed cocoon left, in reverse: egress chains, tc and taps,
 * CNI DEL with the saved result (it releases the IPAM lease and the portmap and masquerade
 * rules), then the namespace.
 */

export const networkSpecSchema = z.object({
  /** none: loopback only; bridge: cocoon's CNI network; ns: join the namespace at nsPath. */
  mode: z.enum(["none", "bridge", "ns"]).default("none"),
  nsPath: z.string().startsWith("/").optional(),
  ports: z.array(portMappingSchema).default([]),
  hosts: z.array(hostEntrySchema()).default([]),
  egress: z.enum(["allow", "deny"]).default("allow"),
  /** --allow-egress CIDR[:PORT] entries, as given. */
  allowEgress: z.array(z.string()).default([]),
  /** The bridge network's subnet (all sandboxes of a host share it). */
  subnet: z.string().default(DEFAULT_SUBNET),
});
export type NetworkSpec = z.input<typeof networkSpecSchema>;
export type ParsedNetworkSpec = z.output<typeof networkSpecSchema>;

const recordSchema = z.object({
  mode: z.enum(["bridge", "ns"]),
  nsPath: z.string(),
  /** Set when cocoon made the namespace (it then deletes it). */
  netnsName: z.string().optional(),
  cni: z
    .object({
      conflist: conflistSchema,
      containerId: z.string(),
      ifName: z.string(),
      runtimeConfig: z.record(z.string(), z.unknown()).default({}),
      result: cniResultSchema.optional(),
    })
    .optional(),
  endpoints: z.array(endpointSchema).default([]),
  ports: z.array(portMappingSchema).default([]),
  /**
   * The egress policy as asked for, kept so an interface hot-plugged later is held to it too
   * (absent in records written before it was kept: those hot-plug without a policy).
   */
  egress: z
    .object({
      mode: z.enum(["allow", "deny"]),
      allowEgress: z.array(z.string()),
      nameservers: z.array(z.string()),
    })
    .optional(),
  /** Set once everything above is gone. */
  removed: z.boolean().default(false),
});
type NetworkRecord = z.infer<typeof recordSchema>;

export const NETWORK_DOC: DocumentKind<NetworkRecord> = {
  schema: "cocoon.network",
  version: 1,
  data: recordSchema,
};
const DOC_NAME = "network";

/** Validates a spec as far as it can without touching the host (flags, library input). */
export function validateNetworkSpec(input: NetworkSpec): ParsedNetworkSpec {
  const parsed = networkSpecSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(
      "ERR_INVALID_CONFIG",
      `invalid network settings at ${issue.path.join(".")}: ${issue.message}`,
    );
  }
  const spec = parsed.data;
  if (spec.mode === "ns" && !spec.nsPath)
    throw new ConfigError("ERR_INVALID_ARGUMENT", "--network ns:PATH needs the namespace's path");
  if (spec.mode !== "bridge" && spec.ports.length)
    throw new ConfigError("ERR_INVALID_ARGUMENT", "-p needs the bridge network (--network bridge)");
  if (spec.mode === "none" && (spec.egress === "deny" || spec.allowEgress.length))
    throw new ConfigError(
      "ERR_INVALID_ARGUMENT",
      "an egress policy needs a network (--network bridge or ns:PATH)",
    );
  if (spec.allowEgress.length && spec.egress !== "deny")
    throw new ConfigError("ERR_INVALID_ARGUMENT", "--allow-egress only makes sense with --egress deny");
  spec.allowEgress.forEach(parseEgressRule);
  parseCidr(spec.subnet, "subnet");
  checkPortClashes(spec.ports);
  return spec;
}

export interface SandboxNetwork {
  nsPath: string;
  devices: NetDevice[];
  endpoints: Endpoint[];
  routes: ScannedRoute[];
  hosts: ParsedNetworkSpec["hosts"];
}

async function readRecord(ctx: SandboxContext, id: string): Promise<NetworkRecord | undefined> {
  return (await ctx.store.readSandbox(id, DOC_NAME, NETWORK_DOC))?.data;
}

async function writeRecord(ctx: SandboxContext, id: string, record: NetworkRecord): Promise<void> {
  await ctx.store.writeSandbox(id, DOC_NAME, NETWORK_DOC, record);
}

/** Host ports other sandboxes of this state root publish (portmap binds nothing: check records). */
async function portsInUse(ctx: SandboxContext, self: string): Promise<PortMapping[]> {
  const out: PortMapping[] = [];
  for (const id of await ctx.store.listSandboxes()) {
    if (id === self) continue;
    const r = await readRecord(ctx, id).catch(() => undefined);
    if (r && !r.removed) out.push(...r.ports);
  }
  return out;
}

async function hasProgram(name: string): Promise<boolean> {
  const r = await runCommand(name, ["--version"], { timeoutMs: 10_000 }).catch(() => undefined);
  return r !== undefined && r.code === 0;
}

/** Every check that can fail before anything is made: one clear error, nothing half made. */
async function preflight(ctx: SandboxContext, id: string, spec: ParsedNetworkSpec): Promise<void> {
  if (spec.egress === "deny" && !(await hasProgram("nft")))
    throw new HostError("ERR_HOST_MISSING_TOOL", "--egress deny needs nftables (the nft program)", {
      hint: "apt-get install nftables",
    });
  if (spec.mode === "ns" && !(await pathExists(spec.nsPath!)))
    throw new HostError("ERR_INVALID_ARGUMENT", `the network namespace ${spec.nsPath} does not exist`, {
      details: { netns: spec.nsPath },
    });
  if (spec.mode !== "bridge") return;
  await checkPlugins(bridgeConflist(ctx.paths.stateRoot, parseCidr(spec.subnet)));
  if (spec.ports.length && !(await hasProgram("iptables")))
    throw new HostError("ERR_HOST_MISSING_TOOL", "-p needs iptables (the CNI portmap plugin uses it)", {
      hint: "apt-get install iptables",
    });
  await checkSubnetFree(parseCidr(spec.subnet));
  const others = await portsInUse(ctx, id);
  for (const p of spec.ports) {
    if (others.some((o) => o.hostPort === p.hostPort && o.protocol === p.protocol))
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `host port ${p.hostPort}/${p.protocol} is already published by another sandbox`,
      );
    await checkPortFree(p);
  }
}

/** The policy for attachNamespace, from the spec's (or the record's) mode and --allow-egress entries. */
function egressPolicy(mode: EgressPolicy["mode"], allowEgress: string[]): EgressPolicy {
  return { mode, allow: allowEgress.map(parseEgressRule) };
}

function devicesOf(endpoints: Endpoint[]): NetDevice[] {
  return endpoints.map((e) => ({ type: "net", id: e.tap.replace("_", "-"), tapName: e.tap, mac: e.mac }));
}

/**
 * Makes the sandbox's network before its VM starts; undefined for `none`. On failure what was
 * made is torn down again before the error is thrown.
 */
export async function setUpNetwork(
  ctx: SandboxContext,
  id: string,
  spec: ParsedNetworkSpec,
  nameservers: string[],
): Promise<SandboxNetwork | undefined> {
  if (spec.mode === "none") return undefined;
  await preflight(ctx, id, spec);
  const netnsName = spec.mode === "bridge" ? sandboxNetnsName(ctx.paths.stateRoot, id) : undefined;
  const record: NetworkRecord = {
    mode: spec.mode,
    nsPath: netnsName ? `${NETNS_DIR}/${netnsName}` : spec.nsPath!,
    ...(netnsName ? { netnsName } : {}),
    endpoints: [],
    ports: spec.ports,
    egress: { mode: spec.egress, allowEgress: spec.allowEgress, nameservers },
    removed: false,
  };
  try {
    await writeRecord(ctx, id, record);
    if (netnsName) {
      await createNamedNetns(netnsName);
      record.cni = {
        conflist: bridgeConflist(ctx.paths.stateRoot, parseCidr(spec.subnet)),
        // The namespace name carries the state root's hash: unique among every cocoon on the host.
        containerId: netnsName,
        ifName: "eth0",
        runtimeConfig: spec.ports.length ? { portMappings: spec.ports } : {},
      };
      await writeRecord(ctx, id, record);
      const cni = record.cni;
      await cniAdd(cni.conflist, cniRuntime(record), async (result) => {
        cni.result = result;
        await writeRecord(ctx, id, record);
      });
    }
    const attached = await attachNamespace(record.nsPath, {
      egress: egressPolicy(spec.egress, spec.allowEgress),
      nameservers,
      onEndpoint: async (e) => {
        record.endpoints.push(e);
        await writeRecord(ctx, id, record);
      },
    });
    if (attached.endpoints.length === 0)
      throw new HostError(
        "ERR_INVALID_ARGUMENT",
        `the network namespace ${record.nsPath} has no interface to give the VM`,
      );
    return {
      nsPath: record.nsPath,
      devices: devicesOf(attached.endpoints),
      endpoints: attached.endpoints,
      routes: attached.routes,
      hosts: spec.hosts,
    };
  } catch (err) {
    await tearDownNetwork(ctx, id).catch((e: unknown) =>
      ctx.logger.warn({ err: e }, "network teardown after a failed setup"),
    );
    throw err;
  }
}

function cniRuntime(record: NetworkRecord, nsGone = false): CniRuntime {
  return {
    containerId: record.cni!.containerId,
    netns: nsGone ? "" : record.nsPath,
    ifName: record.cni!.ifName,
    runtimeConfig: record.cni!.runtimeConfig,
  };
}

/** Configures the guest through the agent: NICs by MAC, routes, extra hosts. */
export async function configureGuest(agent: AgentClient, net: SandboxNetwork): Promise<void> {
  for (const e of net.endpoints) {
    await agent.call("network.updateInterface", {
      mac: e.mac,
      name: e.iface,
      addresses: e.addresses,
      mtu: e.mtu,
    });
  }
  const routes: GuestRoute[] = net.routes.map((r) => ({
    dest: r.dest,
    ...(r.gateway ? { gateway: r.gateway } : {}),
    ...(r.device ? { device: r.device } : {}),
    ...(r.scope === "link" ? { scope: "link" as const } : {}),
  }));
  await agent.call("network.updateRoutes", { routes });
  if (net.hosts.length) await agent.call("network.setHosts", { entries: net.hosts });
}

/**
 * Tears down what the record names, in reverse; safe to run again and after a crash at any
 * point of setUpNetwork. Keeps going past a failed step and throws the first error at the end
 * (the record then stays, so a later rm or gc retries).
 */
export async function tearDownNetwork(ctx: SandboxContext, id: string): Promise<void> {
  const record = await readRecord(ctx, id).catch(() => undefined);
  if (!record || record.removed) return;
  let first: unknown;
  const step = async (fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      first ??= err;
    }
  };
  await step(() => detachNamespace(record.nsPath, record.endpoints));
  if (record.cni) {
    const nsGone = !(await pathExists(record.nsPath));
    await step(() => cniDel(record.cni!.conflist, cniRuntime(record, nsGone), record.cni!.result));
  }
  if (record.netnsName) await step(() => deleteNamedNetns(record.netnsName!));
  if (first) {
    throw new HostError(
      "ERR_PROCESS",
      `tearing down the network of ${id} failed: ${(first as Error).message}`,
      {
        cause: first,
      },
    );
  }
  record.removed = true;
  await writeRecord(ctx, id, record);
}

/** Endpoints for `network ls` and listInterfaces. */
export async function networkRecord(ctx: SandboxContext, id: string): Promise<NetworkRecord | undefined> {
  const r = await readRecord(ctx, id);
  return r && !r.removed ? r : undefined;
}

/**
 * For gc: namespaces this state root made whose sandbox has no record (its record is written
 * before the namespace exists, so this takes a record removed by hand or a lost state root).
 */
export async function orphanNamespaces(
  stateRoot: string,
  known: Set<string>,
): Promise<{ name: string; id: string }[]> {
  const prefix = netnsNamePrefix(stateRoot);
  const names = await readdir(NETNS_DIR).catch(() => [] as string[]);
  return names
    .filter((n) => n.startsWith(prefix))
    .map((name) => ({ name, id: name.slice(prefix.length) }))
    .filter((n) => n.id && !known.has(n.id));
}

export { deleteNamedNetns as removeOrphanNamespace };

/** What hotplug needs from the sandbox: its VMM and its agent. */
export interface HotplugParts {
  hypervisor: Pick<Hypervisor, "hotplugAddDevice" | "hotplugRemoveDevice" | "capabilities" | "type">;
  agent: AgentClient;
}

export interface AddInterfaceOptions {
  /** The interface in the sandbox's namespace to give the VM (it must exist there). */
  iface: string;
  /** Addresses for the guest NIC; default: the interface's own. */
  addresses?: string[];
  mtu?: number;
}

function requireNetwork(record: NetworkRecord | undefined, id: string): NetworkRecord {
  if (!record || record.removed)
    throw new SandboxError(
      "ERR_INVALID_STATE",
      `sandbox ${id} has no network namespace (it was created with --network none)`,
    );
  return record;
}

/**
 * Hot-plugs the interface `iface` of the sandbox's namespace (Kata's AddInterface): tap and tc,
 * the VMM's NIC, then the guest's configuration. Any step failing undoes the ones before it,
 * so the sandbox is as it was.
 */
export async function addInterface(
  ctx: SandboxContext,
  id: string,
  parts: HotplugParts,
  options: AddInterfaceOptions,
): Promise<GuestInterface> {
  const record = requireNetwork(await readRecord(ctx, id), id);
  if (!parts.hypervisor.capabilities().networkDeviceHotplug) {
    throw new SandboxError(
      "ERR_NOT_SUPPORTED",
      `the ${parts.hypervisor.type} VM of ${id} cannot hot-plug network interfaces`,
      {
        hint: 'the microvm machine has no PCI hotplug: create the sandbox with machine_type = "q35"',
      },
    );
  }
  if (record.endpoints.some((e) => e.iface === options.iface))
    throw new SandboxError("ERR_ALREADY_EXISTS", `${options.iface} is already attached to ${id}`);
  const used = new Set(record.endpoints.map((e) => e.tap));
  let index = 0;
  while (used.has(tapName(index))) index++;
  const policy = record.egress;
  const attached = await attachNamespace(record.nsPath, {
    only: [options.iface],
    firstIndex: index,
    ...(policy
      ? {
          egress: egressPolicy(policy.mode, policy.allowEgress),
          nameservers: policy.nameservers,
        }
      : {}),
    onEndpoint: async (e) => {
      record.endpoints.push(e);
      await writeRecord(ctx, id, record);
    },
  });
  const endpoint = attached.endpoints[0];
  const undo: (() => Promise<unknown>)[] = [
    async () => {
      if (endpoint) await detachNamespace(record.nsPath, [endpoint]);
      record.endpoints = record.endpoints.filter((e) => e.iface !== options.iface);
      await writeRecord(ctx, id, record);
    },
  ];
  try {
    if (!endpoint)
      throw new SandboxError(
        "ERR_NOT_FOUND",
        `the network namespace of ${id} has no interface ${options.iface}`,
      );
    const device = devicesOf([endpoint])[0]!;
    await parts.hypervisor.hotplugAddDevice(device);
    undo.unshift(() => parts.hypervisor.hotplugRemoveDevice(device));
    return await parts.agent.call("network.updateInterface", {
      mac: endpoint.mac,
      name: endpoint.iface,
      addresses: options.addresses ?? endpoint.addresses,
      mtu: options.mtu ?? endpoint.mtu,
    });
  } catch (err) {
    for (const step of undo)
      await step().catch((e: unknown) => ctx.logger.warn({ err: e }, "rolling back addInterface"));
    throw err;
  }
}

/** Hot-unplugs an interface added before (Kata's RemoveInterface). */
export async function removeInterface(
  ctx: SandboxContext,
  id: string,
  parts: HotplugParts,
  iface: string,
): Promise<void> {
  const record = requireNetwork(await readRecord(ctx, id), id);
  const endpoint = record.endpoints.find((e) => e.iface === iface);
  if (!endpoint) throw new SandboxError("ERR_NOT_FOUND", `${iface} is not attached to ${id}`);
  if (!parts.hypervisor.capabilities().networkDeviceHotplug)
    throw new SandboxError(
      "ERR_NOT_SUPPORTED",
      `the ${parts.hypervisor.type} VM of ${id} cannot hot-unplug network interfaces`,
    );
  await parts.agent.call("network.removeInterface", { mac: endpoint.mac }).catch(() => undefined);
  await parts.hypervisor.hotplugRemoveDevice(devicesOf([endpoint])[0]!);
  await detachNamespace(record.nsPath, [endpoint]);
  record.endpoints = record.endpoints.filter((e) => e !== endpoint);
  await writeRecord(ctx, id, record);
}
