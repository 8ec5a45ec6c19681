/**
 * Boot benchmark: the time from QemuHypervisor.startVM() to the guest agent's first answer,
 * against bare QEMU booting the same kernel and rootfs with a hand-written command line and a
 * minimal client that sends the agent's HELLO and waits for HELLO_ACK. Same run, same
 * machine, interleaved, so the ratio is meaningful even on a noisy host.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { waitForAgent } from "../src/agent/client.js";
import { encodeJsonFrame, FrameDecoder, FrameType } from "../src/agent/protocol/frame.js";
import { chooseAccelerator } from "../src/host/accel.js";
import { hostTscKhz } from "../src/host/proc.js";
import type { GuestAssets } from "../src/guest/image/catalog.js";
import { QemuHypervisor } from "../src/hypervisor/qemu/driver.js";
import { guestAssets, qemuConfig } from "../test/helpers/env.js";
import { compare, printComparison, writeResults, type Comparison } from "./lib.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);

async function cocoonBoot(root: string, i: number): Promise<number> {
  const hv = new QemuHypervisor();
  await hv.createVM({
    id: `b${i}`,
    config: await qemuConfig(),
    paths: { vmDir: path.join(root, "vm", `b${i}`), jailerBase: path.join(root, "jail") },
    guestReady: async (channel, signal) => void (await waitForAgent(channel, { timeoutMs: 120_000, signal })),
  });
  const t0 = performance.now();
  await hv.startVM(120_000);
  const ms = performance.now() - t0;
  await hv.stopVM();
  await hv.cleanup();
  return ms;
}

export interface BareQemuOptions {
  /** Extra named virtio-serial ports, each backed by a unix socket in `root`. */
  ports?: string[];
  /** Appended to the kernel command line (e.g. another init). */
  append?: string;
  /** The kernel and rootfs (default: the current assets of COCOON_ASSETS or the shared cache). */
  assets?: GuestAssets;
  /** A file for the guest's console (its serial port: the kernel's and the agent's stderr). */
  console?: string;
}

/**
 * The command line of bare QEMU: the same machine flags, kernel, rootfs and agent port as
 * cocoon, no cocoon code. Returns the argv and the socket of each port (agent first).
 */
export async function bareQemuArgs(
  root: string,
  tag: string,
  options: BareQemuOptions = {},
): Promise<{ args: string[]; sockets: Map<string, string> }> {
  const a = options.assets ?? (await guestAssets());
  const accel = (await chooseAccelerator("auto")).accelerator;
  // tsc_early_khz as cocoon passes it: without it, one TCG boot in ~8 hangs calibrating the TSC.
  const tsc = accel === "tcg" ? ` tsc_early_khz=${await hostTscKhz()}` : "";
  const sockets = new Map<string, string>();
  const portArgs: string[] = [];
  for (const [i, name] of ["cocoon.agent.0", ...(options.ports ?? [])].entries()) {
    const sock = path.join(root, `${tag}-${i}.sock`);
    sockets.set(name, sock);
    portArgs.push(
      "-chardev",
      `socket,id=p${i},path=${sock},server=on,wait=off`,
      "-device",
      `virtserialport,chardev=p${i},name=${name}`,
    );
  }
  const args = [
    "-machine",
    "microvm,x-option-roms=off,rtc=on,isa-serial=on,acpi=on",
    "-accel",
    accel,
    "-cpu",
    accel === "kvm" ? "host" : "max",
    "-m",
    "512M",
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    "-kernel",
    a.kernel,
    "-append",
    `console=ttyS0 root=/dev/vda rootfstype=ext4 ro panic=1 pci=off quiet${tsc}${options.append ? ` ${options.append}` : ""}`,
    "-drive",
    `if=none,id=rootfs,file=${a.rootfs},format=raw,readonly=on`,
    "-device",
    "virtio-blk-device,drive=rootfs",
    "-device",
    "virtio-serial-device",
    ...portArgs,
    // Without an RNG the guest's node blocks on getrandom() until the CRNG is seeded.
    "-object",
    "rng-random,id=rng0,filename=/dev/urandom",
    "-device",
    "virtio-rng-device,rng=rng0",
    "-serial",
    options.console ? `file:${options.console}` : "null",
  ];
  return { args, sockets };
}

/** Connects to a QEMU socket chardev, retrying until QEMU listens. */
export async function connectUnix(sock: string): Promise<net.Socket> {
  for (;;) {
    const conn = await new Promise<net.Socket | undefined>((resolve) => {
      const s = net.connect(sock);
      s.once("connect", () => resolve(s));
      s.once("error", () => resolve(undefined));
    });
    if (conn) return conn;
    await sleep(5);
  }
}

/** Bare QEMU booting the same kernel and rootfs, timed to the agent's HELLO_ACK. */
export async function bareBoot(root: string, i: number): Promise<number> {
  const { args, sockets } = await bareQemuArgs(root, `bare${i}`);
  const sock = sockets.get("cocoon.agent.0")!;
  const t0 = performance.now();
  const qemu = spawn("qemu-system-x86_64", args, { stdio: "ignore" });
  const conn = await connectUnix(sock);
  conn.write(encodeJsonFrame(FrameType.HELLO, 0, { protocol: 1, client: "bench" }));
  const decoder = new FrameDecoder();
  await new Promise<void>((resolve) => {
    conn.on("data", (chunk: Buffer) => {
      if (decoder.push(chunk).some((f) => f.type === FrameType.HELLO_ACK)) resolve();
    });
  });
  const ms = performance.now() - t0;
  conn.destroy();
  qemu.kill("SIGKILL");
  await new Promise((r) => qemu.once("exit", r));
  return ms;
}

/**
 * The floor for any agent: bare QEMU booting the same kernel and rootfs to an init that powers
 * the machine off at once (busybox's poweroff -f as pid 1), timed to QEMU's exit.
 */
export async function bareBootToPoweroff(root: string, i: number): Promise<number> {
  const { args } = await bareQemuArgs(root, `off${i}`, { append: "init=/bin/busybox -- poweroff -f" });
  const t0 = performance.now();
  const qemu = spawn("qemu-system-x86_64", args, { stdio: "ignore" });
  const timer = setTimeout(() => qemu.kill("SIGKILL"), 120_000);
  const code = await new Promise<number | null>((resolve) => qemu.once("exit", resolve));
  clearTimeout(timer);
  if (code !== 0) throw new Error(`bare QEMU with a poweroff init exited with ${String(code)}`);
  return performance.now() - t0;
}

export async function runBootBench(): Promise<Comparison[]> {
  await guestAssets();
  const root = await mkdtemp("/tmp/ccb-");
  const cocoon: number[] = [];
  const bare: number[] = [];
  const poweroff: number[] = [];
  try {
    // one warm-up of each (page cache), then interleaved rounds
    await cocoonBoot(root, 0);
    await bareBoot(root, 0);
    // The floor is the newest baseline: if this guest cannot power off from init, say so and
    // keep the other figures rather than losing the whole run.
    const floor = await bareBootToPoweroff(root, 0).then(
      () => true,
      (err: Error) => (process.stderr.write(`  no poweroff floor: ${err.message}\n`), false),
    );
    for (let i = 1; i <= ROUNDS; i++) {
      cocoon.push(await cocoonBoot(root, i));
      bare.push(await bareBoot(root, i));
      if (floor) poweroff.push(await bareBootToPoweroff(root, i));
      process.stderr.write(
        `  boot round ${i}/${ROUNDS}: cocoon ${cocoon.at(-1)!.toFixed(0)} ms, bare ${bare.at(-1)!.toFixed(0)} ms` +
          (floor ? `, bare to poweroff ${poweroff.at(-1)!.toFixed(0)} ms\n` : "\n"),
      );
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  const out = [
    compare(
      "boot to the agent's first answer",
      "ms",
      ["cocoon QemuHypervisor.startVM", cocoon],
      ["bare qemu-system-x86_64 + HELLO", bare],
      "cocoon also verifies assets, chooses the accelerator, connects QMP and runs a health check",
    ),
  ];
  if (poweroff.length) {
    out.push(
      compare(
        "cold start: boot to the agent's first answer vs the floor",
        "ms",
        ["cocoon QemuHypervisor.startVM", cocoon],
        ["bare QEMU, init = poweroff -f, to exit", poweroff],
        "issue 14 goal: ratio <= 1.5",
      ),
    );
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const results = await runBootBench();
  results.forEach(printComparison);
  console.log(`\nwrote ${await writeResults("boot", results)}`);
}
