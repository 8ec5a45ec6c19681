import os from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import type { AgentClient } from "../../agent/client.js";
import type { ResultOf } from "../../agent/protocol/methods.js";
import { SandboxError } from "../../errors.js";
import type { HypervisorConfig } from "../../hypervisor/config.js";
import type { Hypervisor } from "../../hypervisor/hypervisor.js";
import { hostMemoryKb } from "../../host/proc.js";
import type { SandboxCgroups } from "./host-cgroups.js";

/** `cocoon update` / `sandbox.update()`: the size the VM should have. */
export interface ResizeRequest {
  cpus?: number;
  memoryMB?: number;
}

export interface ResizeResult {
  vcpus: number;
  memoryMB: number;
  /** What the guest reports once it has onlined the change. */
  guest: { onlineCpus: number; memTotalBytes: number };
}

export interface ResizeContext {
  hypervisor: Hypervisor;
  agent: AgentClient;
  cgroups: SandboxCgroups | undefined;
  /** How long the guest may take to see and online hot-plugged CPUs and memory. */
  onlineTimeoutMs?: number;
}

function limit(message: string, hint?: string): SandboxError {
  return new SandboxError("ERR_RESOURCE_LIMIT", message, hint ? { hint } : {});
}

/** The size the VM has now: what it booted with plus what was hot-plugged. */
export function currentSize(hypervisor: Hypervisor): { vcpus: number; memoryMB: number } {
  const config: HypervisorConfig = hypervisor.hypervisorConfig();
  const saved = hypervisor.save();
  return {
    vcpus: config.numVCPUs + saved.hotpluggedVCPUs,
    memoryMB: config.memorySize + saved.hotpluggedMemoryMB,
  };
}

/** Refuses what no VM on this host could have, before anything changes. */
async function validate(request: ResizeRequest, hypervisor: Hypervisor): Promise<void> {
  const caps = hypervisor.capabilities();
  const machine = hypervisor.hypervisorConfig().hypervisorMachineType || "default";
  if (request.cpus !== undefined) {
    if (!Number.isInteger(request.cpus) || request.cpus < 1)
      throw limit(`invalid vCPU count ${request.cpus}`);
    const host = os.cpus().length;
    if (request.cpus > host) throw limit(`cannot give ${request.cpus} vCPUs: this host has ${host} CPUs`);
    if (!caps.vcpuHotplug) {
      throw new SandboxError(
        "ERR_NOT_SUPPORTED",
        `${hypervisor.type} (${machine} machine) cannot change the vCPU count of a running VM`,
        hypervisor.type === "qemu" ? { hint: 'use machine_type = "q35" for sandboxes that resize' } : {},
      );
    }
  }
  if (request.memoryMB !== undefined) {
    if (!Number.isInteger(request.memoryMB) || request.memoryMB < 64)
      throw limit(`invalid memory size ${request.memoryMB} MiB (at least 64)`);
    const hostMiB = Math.floor((await hostMemoryKb()) / 1024);
    if (request.memoryMB > hostMiB)
      throw limit(`cannot give ${request.memoryMB} MiB: this host has ${hostMiB} MiB`);
    // A balloon reaches any size up to the boot size; hotplug is needed beyond it.
    const boot = hypervisor.hypervisorConfig().memorySize;
    if (!caps.memoryHotplug && !(caps.memoryBalloon && request.memoryMB <= boot)) {
      throw new SandboxError(
        "ERR_NOT_SUPPORTED",
        caps.memoryBalloon
          ? `${hypervisor.type} cannot grow a running VM past the ${boot} MiB it booted with (its balloon only takes memory back and returns it)`
          : `${hypervisor.type} (${machine} machine) cannot change the memory of a running VM`,
        hypervisor.type === "qemu" ? { hint: 'use machine_type = "q35" for sandboxes that resize' } : {},
      );
    }
  }
}

type Online = ResultOf<"resources.online">;

/** Asks the agent to online what arrived until the guest sees `done`, or gives up. */
async function onlineUntil(ctx: ResizeContext, done: (o: Online) => boolean, what: string): Promise<Online> {
  const deadline = Date.now() + (ctx.onlineTimeoutMs ?? 60_000);
  for (;;) {
    const o = await ctx.agent.call("resources.online", { movableMemory: true });
    if (done(o)) return o;
    if (Date.now() >= deadline) {
      throw limit(
        `the guest did not bring ${what} online (it sees ${o.onlineCpus} CPUs, ${Math.round(o.memTotalBytes / 2 ** 20)} MiB)${o.failures.length ? `: ${o.failures.join("; ")}` : ""}`,
      );
    }
    await sleep(250);
  }
}

async function guestBlockMiB(agent: AgentClient): Promise<number> {
  const d = await agent.call("guest.details", {});
  return Math.max(1, Math.round(d.memBlockSizeBytes / 2 ** 20));
}

/**
 * Resizes a running VM. Host limits are raised before the guest grows and lowered after it
 * shrank, so the VMM is never over its cgroup; a step that fails puts back what this call
 * changed (best effort) and reports why.
 */
export async function resizeSandbox(ctx: ResizeContext, request: ResizeRequest): Promise<ResizeResult> {
  const { hypervisor, cgroups } = ctx;
  await validate(request, hypervisor);
  const before = currentSize(hypervisor);
  let size = { ...before };
  let guest = await ctx.agent.call("resources.online", { movableMemory: true });

  if (request.memoryMB !== undefined && request.memoryMB !== size.memoryMB) {
    const target = request.memoryMB;
    const blockMiB = await guestBlockMiB(ctx.agent);
    const grow = target > size.memoryMB;
    if (grow) await cgroups?.resize({ ...size, memoryMB: target });
    try {
      await hypervisor.resizeMemory(target, blockMiB, false);
    } catch (err) {
      if (grow) await cgroups?.resize(size).catch(() => undefined);
      throw err;
    }
    if (!grow) await cgroups?.resize({ ...size, memoryMB: target });
    const expected = guest.memTotalBytes + (target - size.memoryMB) * 2 ** 20 * 0.9;
    size = { ...size, memoryMB: target };
    if (grow) guest = await onlineUntil(ctx, (o) => o.memTotalBytes >= expected, `${target} MiB of memory`);
  }

  if (request.cpus !== undefined && request.cpus !== size.vcpus) {
    const target = request.cpus;
    const grow = target > size.vcpus;
    if (grow) await cgroups?.resize({ ...size, vcpus: target });
    try {
      await hypervisor.resizeVCPUs(target);
    } catch (err) {
      if (grow) await cgroups?.resize(size).catch(() => undefined);
      throw err;
    }
    if (grow && cgroups) {
      // New vCPU threads start where QEMU's main thread is (the overhead cgroup).
      await cgroups.placement().vcpuThreads([...(await hypervisor.getThreadIDs()).vcpus.values()]);
    }
    if (!grow) await cgroups?.resize({ ...size, vcpus: target });
    size = { ...size, vcpus: target };
    guest = await onlineUntil(ctx, (o) => o.onlineCpus === target, `${target} vCPUs`);
  }
  if (request.memoryMB !== undefined && request.memoryMB < before.memoryMB) {
    guest = await ctx.agent.call("resources.online", { movableMemory: true });
  }
  return { ...size, guest: { onlineCpus: guest.onlineCpus, memTotalBytes: guest.memTotalBytes } };
}
