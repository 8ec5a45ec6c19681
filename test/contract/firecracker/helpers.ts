/**
 * What the Firecracker contract tests run against: the strict fakes (test/fakes/firecracker),
 * once per claimed version (1.0.0 and 1.16.1), or real binaries when COCOON_FC_BIN (and
 * COCOON_JAILER_BIN for jailed tests) point at them; the suite then runs once, for the version
 * the binary reports. Tests that need fake-only behaviour (exact texts the fake chooses, the
 * fake guest's vsock echo, the guest-side MMDS endpoint) are skipped against real binaries.
 * COCOON_FC_KERNEL and COCOON_FC_ROOTFS give a real guest kernel and rootfs (InstanceStart on a
 * real Firecracker loads the kernel); the fakes only need an ELF header.
 */
import { accessSync, constants } from "node:fs";
import { mkdtemp, rm, writeFile, truncate, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { mountsUnder, unmountAllUnder } from "../../../src/host/mount.js";
import type { AgentChannel } from "../../../src/hypervisor/hypervisor.js";
import { binaryVersion } from "../../../src/vmm/firecracker/jailer.js";
import type { MicroVMOptions } from "../../../src/vmm/firecracker/microvm.js";
import { formatVersion } from "../../../src/vmm/firecracker/version.js";
import { connectHybridVsock } from "../../../src/vmm/firecracker/vsock.js";
import { fakeBinaries } from "../../fakes/firecracker/build.js";
import type { TestContext } from "vitest";

export const REAL = Boolean(process.env.COCOON_FC_BIN);

export interface Target {
  /** "1.0.0", "1.16.1" (fakes) or the real binary's version. */
  version: string;
  firecracker: string;
  /** Undefined with a real Firecracker and no COCOON_JAILER_BIN. */
  jailer: string | undefined;
  real: boolean;
}

export const FAKE_VERSIONS = ["1.0.0", "1.16.1"];

/** The versions to run a describe block for (known before any await, for describe.each). */
export const VERSIONS: string[] = REAL ? ["real"] : FAKE_VERSIONS;

export async function target(version: string): Promise<Target> {
  if (REAL) {
    const fc = process.env.COCOON_FC_BIN!;
    const v = await binaryVersion(fc, "Firecracker");
    return {
      version: formatVersion(v),
      firecracker: fc,
      jailer: process.env.COCOON_JAILER_BIN || undefined,
      real: true,
    };
  }
  const b = await fakeBinaries(version);
  return { version, firecracker: b.firecracker, jailer: b.jailer, real: false };
}

/**
 * Why this target cannot boot a guest, or undefined. The fakes always can. A real Firecracker
 * needs a real guest kernel (COCOON_FC_KERNEL: without one, InstanceStart is refused or, on
 * v1.0, aborts) and a /dev/kvm it can open; everything before InstanceStart works without them.
 */
export function bootBlocker(t: Target): string | undefined {
  if (!t.real) return undefined;
  const missing: string[] = [];
  if (!process.env.COCOON_FC_KERNEL) missing.push("no guest kernel (set COCOON_FC_KERNEL)");
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
  } catch {
    missing.push("no usable /dev/kvm");
  }
  return missing.length
    ? `boots a guest: a real Firecracker cannot boot here (${missing.join(", ")})`
    : undefined;
}

/**
 * The KVM device cocoon checks before booting: the real one for real binaries; for the fakes,
 * which need no KVM, /dev/null (a read-write character device every host has), so the suite
 * runs on hosts without KVM.
 */
export function kvmDeviceFor(t: Target): string | undefined {
  return t.real ? undefined : "/dev/null";
}

/** The harness options a contract test starts from: the target's binaries, the VM's dirs under `dir`. */
export function microVmOptions(t: Target, dir: string): MicroVMOptions {
  const kvmDevice = kvmDeviceFor(t);
  return {
    firecrackerPath: t.firecracker,
    ...(t.jailer ? { jailerPath: t.jailer } : {}),
    resourceDir: path.join(dir, "res"),
    chrootBaseDir: path.join(dir, "jails"),
    ...(kvmDevice ? { kvmDevice } : {}),
  };
}

/** Skips a boot-dependent test, with the one reason, where the target cannot boot. */
export function skipUnlessBootable(t: Target, ctx: TestContext): void {
  const reason = bootBlocker(t);
  if (reason) ctx.skip(reason);
}

/** A short temp directory (unix socket paths must stay under 108 bytes). */
export async function shortTmp(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), "cfc-"));
}

/** A guest kernel: COCOON_FC_KERNEL, else a file with an ELF header (all the fake checks). */
export async function guestKernel(dir: string): Promise<string> {
  if (process.env.COCOON_FC_KERNEL) return process.env.COCOON_FC_KERNEL;
  const file = path.join(dir, "vmlinux");
  const elf = Buffer.alloc(64);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  await writeFile(file, elf);
  return file;
}

/** A root filesystem image: COCOON_FC_ROOTFS, else a sparse 1 MiB file. */
export async function guestRootfs(dir: string, name = "rootfs.ext4"): Promise<string> {
  if (process.env.COCOON_FC_ROOTFS && name === "rootfs.ext4") return process.env.COCOON_FC_ROOTFS;
  const file = path.join(dir, name);
  await writeFile(file, "");
  await truncate(file, 1024 * 1024);
  return file;
}

// Live processes whose command line mentions a path: the shared leak check.
export { processesMentioning } from "../../helpers/env.js";
import { entriesUnder, processesMentioning } from "../../helpers/env.js";

/** Unix sockets below `dir` (API, vsock and listener sockets a cleanup must have removed). */
export async function socketsUnder(dir: string): Promise<string[]> {
  return (await entriesUnder(dir)).filter((e) => e.entry.isSocket()).map((e) => e.path);
}

/**
 * Processes mentioning `dir` that are still there after up to 2 s. A process whose child was
 * just killed may take a moment to go: the fake jailer's `unshare --pid --fork` parent of a
 * Firecracker in a new pid namespace exits only after it has reaped it. A leak stays.
 */
async function lingeringProcesses(dir: string): Promise<string[]> {
  const deadline = Date.now() + 2_000;
  for (;;) {
    const found = (await processesMentioning(dir)).map((p) => `${p.pid}: ${p.cmdline}`);
    if (found.length === 0 || Date.now() >= deadline) return found;
    await sleep(50);
  }
}

/** What a test leaves behind under `dir`: processes, mounts, sockets. */
export async function leaks(
  dir: string,
): Promise<{ processes: string[]; mounts: string[]; sockets: string[] }> {
  return {
    processes: await lingeringProcesses(dir),
    mounts: (await mountsUnder(dir)).map((m) => m.target),
    sockets: await socketsUnder(dir),
  };
}

export async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/**
 * Kills whatever still mentions `dir` and unmounts what is mounted below it (a failed test must
 * not leak, and rm must never delete through a bind mount), then removes it.
 */
export async function removeTmp(dir: string): Promise<void> {
  for (const p of await processesMentioning(dir)) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  await unmountAllUnder(dir, { lazy: true });
  await rm(dir, { recursive: true, force: true });
}

/** A guest check like the sandbox's: the agent port answers through hybrid vsock (the fake guest echoes). */
export async function echoReady(channel: AgentChannel, signal: AbortSignal): Promise<void> {
  if (channel.kind !== "hvsock") throw new Error("expected hybrid vsock");
  const { socket } = await connectHybridVsock(channel.path, channel.port, { signal, timeoutMs: 5_000 });
  socket.write("ping\n");
  await new Promise<void>((resolve) => socket.once("data", () => resolve()));
  socket.destroy();
}
