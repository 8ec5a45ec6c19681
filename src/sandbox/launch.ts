/**
 * How a sandbox's VM comes up (split out of sandbox.ts): a cold boot, a clone of the VM
 * template, a warm clone taken from the pool, or a restored snapshot; then the agent's side of
 * the create (identity, network, containers). Sandbox.create runs these under the sandbox lock
 * and undoes everything if one fails; they persist the record at the points a crash must find.
 */
import type { Logger } from "pino";
import { waitForAgent, type AgentClient } from "../agent/client.js";
import type { Storage } from "../agent/protocol/methods.js";
import { SandboxError } from "../errors.js";
import type { HypervisorConfig } from "../hypervisor/config.js";
import type { Hypervisor } from "../hypervisor/hypervisor.js";
import { watchMainProcess } from "../monitor/records.js";
import { processConfigSchema, type ParsedContainerConfig } from "./config.js";
import { freshenGuest } from "./factory/clone.js";
import { configureGuest, setUpNetwork, type SandboxNetwork } from "./network.js";
import { createPodShare, podShareDevice, podShareDir } from "./pod.js";
import { prepareHostCgroups } from "./resources/hooks.js";
import { blockStorage, prepareRootfs, type PreparedRootfs } from "./rootfs.js";
import type { PooledVm, SandboxContext, SandboxRestore } from "./sandbox.js";
import type { SandboxDoc } from "./state.js";

/** What the launch needs of the sandbox being made. */
export interface LaunchHost {
  readonly id: string;
  readonly ctx: SandboxContext;
  readonly doc: SandboxDoc;
  readonly hypervisor: Hypervisor;
  readonly vmDir: string;
  readonly workDir: string;
  readonly logger: Logger;
  hostname(): string;
  persist(): Promise<void>;
  agent(): Promise<AgentClient>;
}

/**
 * A new VM (cold, or a clone made now) or a warm clone from the pool: rootfs prepared first
 * (a bad path fails before a VM exists), the record written before the VM exists, the VM
 * started or adopted, then the guest set up.
 */
export async function bootSandbox(
  host: LaunchHost,
  hvConfig: HypervisorConfig,
  pooled?: PooledVm,
): Promise<void> {
  // Prepare rootfs first: a missing directory is refused before a VM exists.
  const sharing =
    host.hypervisor.type === "firecracker" || host.hypervisor.type === "acrn" ? "none" : hvConfig.sharedFS;
  if (host.doc.config.podShare && sharing !== "virtio-fs" && sharing !== "virtio-9p")
    throw new SandboxError(
      "ERR_NOT_SUPPORTED",
      `a pod sandbox needs a shared filesystem (virtio-fs or 9p), and ${host.hypervisor.type} with shared_fs "${sharing || "none"}" has none`,
    );
  const prepared: { id: string; rootfs: PreparedRootfs }[] = [];
  for (const c of host.doc.config.containers) {
    const rootfs = await prepareRootfs(c.id, c.rootfs, { workDir: host.workDir, sharing });
    prepared.push({ id: c.id, rootfs });
    host.doc.containers.push({
      config: c,
      state: "created",
      rootfs: {
        kind: rootfs.kind,
        hostPath: rootfs.hostPath,
        owned: rootfs.owned,
        ...(rootfs.kind === "block" ? { blockId: rootfs.device.id } : {}),
      },
    });
  }
  // The record exists before the VM does, so a crash mid-boot can still be cleaned up by `rm`.
  if (pooled) host.doc.vmDir = pooled.vmDir;
  await host.persist();
  let net: SandboxNetwork | undefined;
  if (pooled) await adoptVm(host, hvConfig, pooled);
  else net = await startVm(host, hvConfig, prepared);
  host.doc.hypervisorState = host.hypervisor.save() as unknown as Record<string, unknown>;
  await host.persist();
  await setUpGuest(host, hvConfig, prepared, net);
}

/** A cold boot (or a clone made now): the VM starts and its agent answers. */
async function startVm(
  host: LaunchHost,
  hvConfig: HypervisorConfig,
  prepared: { id: string; rootfs: PreparedRootfs }[],
): Promise<SandboxNetwork | undefined> {
  const agentCfg = host.doc.config.agentConfig;
  const cgroups = await prepareHostCgroups(host.ctx, host.doc.config, hvConfig, host.hypervisor.type);
  // Networking (network.ts): the namespace and its taps exist before the VMM that opens them.
  const net = host.doc.config.network
    ? await setUpNetwork(host.ctx, host.id, host.doc.config.network, host.doc.config.dns)
    : undefined;
  await host.hypervisor.createVM({
    ...(cgroups ? { placement: cgroups.placement() } : {}),
    ...(net ? { netnsPath: net.nsPath } : {}),
    id: host.id,
    config: hvConfig,
    paths: { vmDir: host.vmDir, jailerBase: host.ctx.paths.jailerBase },
    logger: host.logger,
    guestReady: async (channel, signal) =>
      void (await waitForAgent(channel, { timeoutMs: agentCfg.dialTimeoutMs, signal })),
  });
  for (const p of prepared) if (p.rootfs.kind === "share") await host.hypervisor.addDevice(p.rootfs.device);
  const podFs = hvConfig.sharedFS; // boot() refused a pod share without file sharing
  if (host.doc.config.podShare && (podFs === "virtio-fs" || podFs === "virtio-9p")) {
    // Under the work directory, so every cleanup path (delete, a failed create, gc) unmounts it.
    await createPodShare(podShareDir(host.workDir));
    await host.hypervisor.addDevice(podShareDevice(podShareDir(host.workDir), podFs));
  }
  for (const d of net?.devices ?? []) await host.hypervisor.addDevice(d);
  await host.hypervisor.startVM(agentCfg.dialTimeoutMs);
  return net;
}

/** A warm clone from the pool (src/sandbox/factory/pool.ts): its VM already runs. */
async function adoptVm(host: LaunchHost, hvConfig: HypervisorConfig, pooled: PooledVm): Promise<void> {
  await host.hypervisor.createVM({
    id: host.id,
    config: hvConfig,
    paths: { vmDir: pooled.vmDir, jailerBase: host.ctx.paths.jailerBase },
    logger: host.logger,
  });
  host.hypervisor.load(pooled.hypervisorState);
}

/** The agent's side of a create: identity, containers. */
async function setUpGuest(
  host: LaunchHost,
  hvConfig: HypervisorConfig,
  prepared: { id: string; rootfs: PreparedRootfs }[],
  net: SandboxNetwork | undefined,
): Promise<void> {
  const agent = await host.agent();
  // VM templates and snapshots: a clone gets fresh randomness and the host's clock first.
  if (hvConfig.bootFromTemplate) await freshenGuest(agent, host.logger);
  await agent.call("sandbox.create", {
    sandboxId: host.id,
    hostname: host.hostname(),
    dns: host.doc.config.dns,
    storages: [],
  });
  if (net) await configureGuest(agent, net);
  for (const p of prepared) {
    let storage: Storage;
    if (p.rootfs.kind === "block") {
      const attached = await host.hypervisor.hotplugAddDevice(p.rootfs.device);
      if (attached.type !== "block" || !attached.guestPath) {
        throw new SandboxError(
          "ERR_INTERNAL",
          `the ${host.hypervisor.type} driver did not say where the rootfs disk is in the guest`,
        );
      }
      storage = blockStorage(attached.guestPath, p.rootfs.storage);
    } else {
      storage = p.rootfs.storage;
    }
    const c = host.doc.config.containers.find((x) => x.id === p.id)!;
    await createInGuest(agent, c, storage, host.hostname());
  }
  host.doc.hypervisorState = host.hypervisor.save() as unknown as Record<string, unknown>;
  await host.persist();
}

/** Creates a container in the guest on storage the guest can mount. */
export async function createInGuest(
  agent: AgentClient,
  c: ParsedContainerConfig,
  storage: Storage,
  hostname: string,
  rootfsSubpath = "",
): Promise<void> {
  const proc = processConfigSchema.parse(c.process);
  await agent.call("container.create", {
    containerId: c.id,
    rootfs: storage,
    rootfsSubpath,
    hostname: c.hostname ?? hostname,
    process: {
      ...proc,
      ...(proc.rows ? { rows: proc.rows } : {}),
      ...(proc.cols ? { cols: proc.cols } : {}),
    },
    readonlyRootfs: c.readonlyRootfs,
    ...(c.resources ? { resources: c.resources } : {}),
    ...(c.rlimits ? { rlimits: c.rlimits } : {}),
    mounts: c.mounts,
  });
}

/**
 * A restored snapshot: the guest resumes where the snapshot left it (processes, memory,
 * guest files); only the host side is new (VM directory, sockets, agent session). The guest
 * gets fresh randomness and the host's clock before anything else talks to it.
 */
export async function bootFromSnapshot(
  host: LaunchHost,
  hvConfig: HypervisorConfig,
  restore: SandboxRestore,
): Promise<void> {
  const agentCfg = host.doc.config.agentConfig;
  await host.persist();
  const cgroups = await prepareHostCgroups(host.ctx, host.doc.config, hvConfig, host.hypervisor.type);
  await host.hypervisor.createVM({
    ...(cgroups ? { placement: cgroups.placement() } : {}),
    id: host.id,
    config: hvConfig,
    paths: { vmDir: host.vmDir, jailerBase: host.ctx.paths.jailerBase },
    logger: host.logger,
    restoreFrom: { dir: restore.dir, namedRam: restore.namedRam },
    guestReady: async (channel, signal) =>
      void (await waitForAgent(channel, { timeoutMs: agentCfg.dialTimeoutMs, signal })),
  });
  await host.hypervisor.startVM(agentCfg.dialTimeoutMs);
  host.doc.hypervisorState = host.hypervisor.save() as unknown as Record<string, unknown>;
  await host.persist();
  await freshenGuest(await host.agent(), host.logger);
  host.doc.state = restore.state;
  if (restore.guestProcessExit) host.doc.guestProcessExit = restore.guestProcessExit;
  if (restore.watchMain)
    await watchMainProcess(host.vmDir, restore.watchMain.execId, restore.watchMain.graceMs);
}
