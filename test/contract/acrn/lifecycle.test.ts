import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AcrnHypervisor } from "../../../src/hypervisor/acrn/acrn.js";
import { AcrnUuidPool } from "../../../src/hypervisor/acrn/uuid-pool.js";
import type { AgentChannel, CreateVmOptions } from "../../../src/hypervisor/hypervisor.js";
import { isProcessAlive } from "../../../src/host/proc.js";
import { ACRN_UUIDS } from "../../../src/vmm/acrn/uuids.js";
import type { FakeVmRecord } from "../../fakes/acrn/common.js";
import { acrnFixture, listTree, type AcrnFixture } from "../../fakes/acrn/fixture.js";

// The ACRN driver against the fake acrn-dm and acrnctl: launch, readiness, hotplug, stop paths,
// and that nothing (process, socket, file, directory, UUID) is left behind.

let fx: AcrnFixture;
const started: AcrnHypervisor[] = [];
beforeEach(async () => {
  fx = await acrnFixture();
});
afterEach(async () => {
  // Never leak a fake acrn-dm, whatever a test did.
  for (const d of started.splice(0)) {
    for (const pid of d.getPids()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  }
  await fx.cleanup();
});

function track(d: AcrnHypervisor): AcrnHypervisor {
  started.push(d);
  return d;
}

async function readRecord(name: string): Promise<FakeVmRecord | undefined> {
  try {
    return JSON.parse(await readFile(path.join(fx.fakeState, `${name}.json`), "utf8")) as FakeVmRecord;
  } catch {
    return undefined;
  }
}

/** The agent check a sandbox would pass: one round trip on an agent port (the fake echoes). */
async function echoRoundTrip(channel: AgentChannel, signal?: AbortSignal, port = 0): Promise<string> {
  if (channel.kind !== "serial") throw new Error(`unexpected channel ${channel.kind}`);
  return new Promise((resolve, reject) => {
    const sock = net.connect(channel.paths[port]!);
    signal?.addEventListener("abort", () => sock.destroy(new Error("aborted")));
    sock.once("error", reject);
    sock.once("connect", () => sock.write("ping\n"));
    sock.once("data", (d) => {
      sock.destroy();
      resolve(d.toString());
    });
  });
}

function readLine(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    sock.once("error", reject);
    sock.once("data", (d) => {
      sock.destroy();
      resolve(d.toString());
    });
  });
}

async function startVm(
  id: string,
  extra: Partial<CreateVmOptions> = {},
  d = fx.driver(),
): Promise<AcrnHypervisor> {
  track(d);
  await d.createVM(fx.createOptions(id, fx.config(), extra));
  await d.startVM(20_000);
  return d;
}

const busyUuids = () => new AcrnUuidPool(fx.store).busy();

async function expectNoLeaks(id: string): Promise<void> {
  expect(existsSync(fx.paths.vmDir(id))).toBe(false);
  expect(await listTree(fx.fakeState)).toEqual([]); // no record or monitor socket of a live VM
  expect(await busyUuids()).toEqual([]);
}

describe("ACRN driver against the fake acrn-dm and acrnctl", () => {
  it("runs a VM through its whole life and leaves nothing behind", async () => {
    const vmDir = fx.paths.vmDir("life");
    const d = fx.driver();
    track(d);
    let readyAnswer = "";
    await d.createVM(
      fx.createOptions("life", fx.config(), {
        guestReady: async (channel, signal) => void (readyAnswer = await echoRoundTrip(channel, signal)),
      }),
    );
    await d.addDevice({ type: "net", id: "eth0", tapName: "tap0_kata", mac: "02:00:ca:fe:00:01" });
    await d.addDevice({
      type: "serial",
      id: "dbg",
      name: "debug.0",
      socketPath: path.join(vmDir, "debug.sock"),
    });
    await d.startVM(20_000);
    expect(readyAnswer).toBe("ping\n"); // guestReady ran against the live agent port
    // Each agent port serves one session for the life of the VM; the next session takes the next port.
    await expect(echoRoundTrip(d.agentChannel())).rejects.toMatchObject({ code: "ECONNREFUSED" });
    expect(await echoRoundTrip(d.agentChannel(), undefined, 1)).toBe("ping\n");

    // The fake ran exactly the command line the driver built, and accepted it.
    const runs = await fx.invocations("acrn-dm");
    expect(runs).toHaveLength(1);
    expect(runs[0]!.argv).toEqual(d.commandLine().slice(1));
    const [pid] = d.getPids();
    expect(runs[0]!.pid).toBe(pid);
    const rec = await readRecord("sandbox-life");
    expect(rec).toMatchObject({ pid, uuid: ACRN_UUIDS[0], acpi: true, memory: "512M", kernel: fx.kernel });
    expect(rec!.slots.filter((s) => s.dummy)).toHaveLength(8);
    await d.check();
    expect(await readLine(await d.getVMConsole())).toBe("fake acrn-dm console of sandbox-life\n");

    // Block hotplug through acrnctl blkrescan.
    const disk1 = await fx.file("disk1.img");
    const disk2 = await fx.file("disk2.img");
    const a = await d.hotplugAddDevice({ type: "block", id: "c1", path: disk1 });
    expect(a).toMatchObject({ index: 1, guestPath: "/dev/vdb" });
    const b = await d.hotplugAddDevice({ type: "block", id: "c2", path: disk2, index: 8, readOnly: true });
    expect(b).toMatchObject({ index: 8, guestPath: "/dev/vdi" });
    expect((await fx.invocations("acrnctl")).map((i) => i.argv)).toEqual([
      ["blkrescan", "sandbox-life", `5,${disk1}`],
      ["blkrescan", "sandbox-life", `12,${disk2},ro`],
    ]);
    const slots = (await readRecord("sandbox-life"))!.slots;
    expect(slots.find((s) => s.slot === 5)).toMatchObject({ backing: disk1, dummy: false });
    expect(slots.find((s) => s.slot === 12)).toMatchObject({ backing: `${disk2},ro`, dummy: false });

    // Validation happens before acrnctl runs.
    await expect(d.hotplugAddDevice({ type: "block", id: "x", path: "" })).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: expect.stringContaining("empty path"),
    });
    await expect(d.hotplugAddDevice({ type: "block", id: "x", path: disk1, index: 9 })).rejects.toMatchObject(
      { code: "ERR_INVALID_ARGUMENT", message: expect.stringContaining("past ACRN's pool of 8") },
    );
    await expect(d.hotplugAddDevice({ type: "block", id: "x", path: disk1, index: 0 })).rejects.toMatchObject(
      { code: "ERR_INVALID_ARGUMENT" },
    );
    await expect(d.hotplugAddDevice({ type: "block", id: "x", path: disk1, index: 1 })).rejects.toMatchObject(
      { code: "ERR_INVALID_STATE" },
    );
    await expect(
      d.hotplugAddDevice({ type: "block", id: "x", path: path.join(fx.dir, "missing.img") }),
    ).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: expect.stringContaining("no such file"),
    });
    await expect(
      d.hotplugAddDevice({ type: "net", id: "n", tapName: "tap1", mac: "02:00:00:00:00:02" }),
    ).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
    expect(await fx.invocations("acrnctl")).toHaveLength(2);

    // Unplugging keeps the drive (ACRN cannot detach it) and succeeds; unknown ones are errors.
    expect(await d.hotplugRemoveDevice(a)).toEqual(a);
    await expect(
      d.hotplugRemoveDevice({ type: "block", id: "zz", path: disk1, index: 3 }),
    ).rejects.toMatchObject({ code: "ERR_NOT_FOUND" });

    // Another cocoon process adopts the VM from its saved state and keeps driving it.
    const saved = JSON.parse(JSON.stringify(d.save()));
    expect(saved).toMatchObject({
      pid,
      blockIndexMap: [1, 8],
      driver: { uuid: ACRN_UUIDS[0], vmState: "running" },
    });
    const other = track(fx.driver());
    other.load(saved);
    await other.createVM(fx.createOptions("life", fx.config()));
    expect(await busyUuids()).toHaveLength(1);
    await other.check();
    expect(await other.hotplugAddDevice({ type: "block", id: "c3", path: disk1 })).toMatchObject({
      index: 2,
      guestPath: "/dev/vdc",
    });
    expect((await fx.invocations("acrnctl")).at(-1)!.argv).toEqual([
      "blkrescan",
      "sandbox-life",
      `6,${disk1}`,
    ]);

    // It stops the VM by pid: SIGINT, which the fake answers by powering off (removing its record).
    await other.stopVM();
    expect(await isProcessAlive(pid!)).toBe(false);
    expect(await readRecord("sandbox-life")).toBeUndefined();
    expect(await readFile(path.join(vmDir, "acrn-dm.log"), "utf8")).toContain(
      "Receive SIGINT to terminate application",
    );
    expect(await busyUuids()).toEqual([]);
    await expect(other.check()).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
    // acrn-dm leaves its sockets behind; cleanup removes them, the log and the directory.
    expect(existsSync(path.join(vmDir, "console.sock"))).toBe(true);
    await other.cleanup();
    await d.cleanup(); // the first driver's view is stale; cleanup must still be harmless
    await other.cleanup();
    await expectNoLeaks("life");
  }, 60_000);

  it("stops acrn-dm with SIGINT, which it exits 0 on", async () => {
    const d = await startVm("int");
    const [pid] = d.getPids();
    const t0 = Date.now();
    await d.stopVM();
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await isProcessAlive(pid!)).toBe(false);
    expect(await readFile(path.join(fx.paths.vmDir("int"), "acrn-dm.log"), "utf8")).toContain(
      "Receive SIGINT",
    );
    expect(d.getPids()).toEqual([]);
    await d.cleanup();
    await expectNoLeaks("int");
  }, 30_000);

  it.each([
    ["its own child", false],
    ["a VM known only by pid", true],
  ])(
    "escalates to SIGKILL when acrn-dm ignores SIGINT (%s)",
    async (_what, byPid) => {
      const env = { ...fx.env, FAKE_ACRN_DM_IGNORE_SIGINT: "1" };
      const d = await startVm("kill", {}, fx.driver({ env, stopTimeoutMs: 600 }));
      const [pid] = d.getPids();
      let stopper = d;
      if (byPid) {
        stopper = track(fx.driver({ env, stopTimeoutMs: 600 }));
        stopper.load(JSON.parse(JSON.stringify(d.save())));
        await stopper.createVM(fx.createOptions("kill", fx.config()));
      }
      const t0 = Date.now();
      await stopper.stopVM();
      const took = Date.now() - t0;
      expect(took).toBeGreaterThanOrEqual(550); // waited out the SIGINT grace period
      expect(took).toBeLessThan(10_000);
      expect(await isProcessAlive(pid!)).toBe(false);
      expect(await readFile(path.join(fx.paths.vmDir("kill"), "acrn-dm.log"), "utf8")).toContain(
        "ignoring SIGINT",
      );
      // SIGKILL gave the fake no chance to deregister: its record is stale, as with a real acrn-dm.
      expect(await readRecord("sandbox-kill")).toMatchObject({ pid });
      expect(await busyUuids()).toEqual([]);
      await stopper.cleanup();
      await d.cleanup();
      expect(existsSync(fx.paths.vmDir("kill"))).toBe(false);
    },
    30_000,
  );

  it("treats an acrn-dm that is already gone as stopped", async () => {
    const d = await startVm("dead");
    const [pid] = d.getPids();
    process.kill(pid!, "SIGKILL");
    while (await isProcessAlive(pid!)) await new Promise((r) => setTimeout(r, 20));
    await expect(d.check()).rejects.toMatchObject({
      code: "ERR_VMM_EXITED",
      message: expect.stringContaining(`pid ${pid}`),
    });
    await d.stopVM();
    expect(await busyUuids()).toEqual([]);
    await d.cleanup();
    expect(existsSync(fx.paths.vmDir("dead"))).toBe(false);
  }, 30_000);

  it("waits for an exit without asking for one (waitOnly)", async () => {
    const d = await startVm("wait", {}, fx.driver({ stopTimeoutMs: 300 }));
    const [pid] = d.getPids();
    await expect(d.stopVM({ waitOnly: true })).rejects.toMatchObject({ code: "ERR_VMM_TIMEOUT" });
    expect(await isProcessAlive(pid!)).toBe(true); // it was not signalled
    expect(await busyUuids()).toHaveLength(1);
    process.kill(pid!, "SIGINT"); // the VM powers off by itself
    await d.stopVM({ waitOnly: true });
    expect(await isProcessAlive(pid!)).toBe(false);
    expect(await busyUuids()).toEqual([]);
    await d.cleanup();
    await expectNoLeaks("wait");
  }, 30_000);

  it("waits for the console socket rather than a fixed time", async () => {
    const d = fx.driver({ env: { ...fx.env, FAKE_ACRN_DM_SOCKET_DELAY_MS: "700" } });
    track(d);
    await d.createVM(fx.createOptions("slow", fx.config()));
    const t0 = Date.now();
    await d.startVM(20_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(650);
    expect(Date.now() - t0).toBeLessThan(15_000);
    await d.cleanup();
    await expectNoLeaks("slow");
  }, 30_000);

  it("reports an acrn-dm that fails at launch with its own message", async () => {
    const d = fx.driver({ env: { ...fx.env, FAKE_ACRN_DM_FAIL: "unable to setup memory (no hugepages)" } });
    track(d);
    await d.createVM(fx.createOptions("fail", fx.config()));
    await expect(d.startVM(20_000)).rejects.toMatchObject({
      code: "ERR_VMM_START",
      message: expect.stringMatching(/^acrn-dm exited with code 1 during boot: .*no hugepages/),
    });
    expect(d.getPids()).toEqual([]);
    expect(await busyUuids()).toHaveLength(1); // still created: the caller may retry or clean up
    await d.cleanup();
    await expectNoLeaks("fail");
  }, 30_000);

  it("times out when acrn-dm never creates its console socket, and kills it", async () => {
    const d = fx.driver({ env: { ...fx.env, FAKE_ACRN_DM_NO_SOCKET: "1" } });
    track(d);
    await d.createVM(fx.createOptions("hang", fx.config()));
    const starting = d.startVM(1_500);
    // The pid comes from the driver while it waits: on a loaded machine the fake may be killed
    // before it has even recorded its own invocation.
    const settled = starting.then(
      () => true,
      () => true,
    );
    let pid: number | undefined;
    while (pid === undefined && !(await Promise.race([settled, sleep(10, false)]))) pid = d.getPids()[0];
    await expect(starting).rejects.toMatchObject({
      code: "ERR_VMM_TIMEOUT",
      message: expect.stringContaining("did not create its console socket"),
    });
    expect(pid).toBeDefined();
    expect(await isProcessAlive(pid!)).toBe(false);
    expect(d.getPids()).toEqual([]);
    await d.cleanup();
    await expectNoLeaks("hang");
  }, 30_000);

  it("fails the start when the guest check fails, and kills acrn-dm", async () => {
    const d = fx.driver();
    track(d);
    await d.createVM(
      fx.createOptions("nogo", fx.config(), {
        guestReady: async () => {
          throw new Error("agent said no");
        },
      }),
    );
    await expect(d.startVM(20_000)).rejects.toThrow("agent said no");
    const [run] = await fx.invocations("acrn-dm");
    expect(await isProcessAlive(run!.pid)).toBe(false);
    await d.cleanup();
    await expectNoLeaks("nogo");
  }, 30_000);

  it("gives up waiting for the guest when acrn-dm dies, aborting the check", async () => {
    const d = fx.driver({ env: { ...fx.env, FAKE_ACRN_DM_CRASH_AFTER_MS: "300" } });
    track(d);
    let aborted = false;
    await d.createVM(
      fx.createOptions("crash", fx.config(), {
        guestReady: (_channel, signal) =>
          new Promise<void>((_resolve, reject) => {
            signal.addEventListener("abort", () => {
              aborted = true;
              reject(new Error("aborted"));
            });
          }),
      }),
    );
    await expect(d.startVM(20_000)).rejects.toMatchObject({
      code: "ERR_VMM_START",
      message: expect.stringContaining("the VM crashed"),
    });
    expect(aborted).toBe(true);
    await d.cleanup();
    await expectNoLeaks("crash");
  }, 30_000);

  it("refuses a second start and a start after stop", async () => {
    const d = await startVm("twice");
    await expect(d.startVM(5_000)).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
    await d.stopVM();
    await expect(d.startVM(5_000)).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
    await d.cleanup();
    await expectNoLeaks("twice");
  }, 30_000);
});
