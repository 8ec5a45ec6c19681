import { existsSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManagedProcess, runCommand } from "../../../src/host/process.js";
import { isProcessAlive } from "../../../src/host/proc.js";
import { ACRN_UUIDS } from "../../../src/vmm/acrn/uuids.js";
import { FAKE_ACRN_DM, FAKE_ACRNCTL, acrnFixture, type AcrnFixture } from "../../fakes/acrn/fixture.js";

// The fakes must refuse what ACRN's tools refuse, or the contract tests prove nothing.

let fx: AcrnFixture;
const running: ManagedProcess[] = [];
beforeEach(async () => (fx = await acrnFixture()));
afterEach(async () => {
  for (const p of running.splice(0)) await p.terminate([{ signal: "SIGKILL", timeoutMs: 5_000 }]);
  await fx.cleanup();
});

const dm = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  runCommand(FAKE_ACRN_DM, args, { env: { ...fx.env, ...env }, timeoutMs: 20_000 });
const ctl = (args: string[]) => runCommand(FAKE_ACRNCTL, args, { env: fx.env, timeoutMs: 20_000 });

function minimal(name = "vm1", uuid: string = ACRN_UUIDS[0]): string[] {
  return [
    "-U",
    uuid,
    "-m",
    "256M",
    "-s",
    "0:0,hostbridge",
    "-s",
    "3,virtio-blk,nodisk",
    "-s",
    "4,virtio-console,socket:p=" + path.join(fx.dir, `${name}.sock`),
    "-k",
    fx.kernel,
    name,
  ];
}

/** Starts a fake acrn-dm and waits until it has registered itself. */
async function launch(args: string[]): Promise<ManagedProcess> {
  const p = await ManagedProcess.spawn(FAKE_ACRN_DM, args, { env: fx.env });
  running.push(p);
  const name = args.at(-1)!;
  const deadline = Date.now() + 15_000;
  while (!existsSync(path.join(fx.fakeState, `${name}.json`))) {
    if (!p.running) throw new Error(`fake acrn-dm exited: ${p.stderrTail()}`);
    if (Date.now() > deadline) throw new Error("fake acrn-dm did not come up");
    await new Promise((r) => setTimeout(r, 20));
  }
  return p;
}

describe("fake acrn-dm", () => {
  it.each<[string, string[], RegExp]>([
    ["an unknown option", ["-Z", "vm"], /invalid option -- 'Z'/],
    ["an unknown long option", ["--vm_name", "x", "vm"], /unrecognized option '--vm_name'/],
    ["no VM name", ["-U", ACRN_UUIDS[0], "-k", "KERNEL"], /Usage: acrn-dm/],
    ["two VM names", ["-U", ACRN_UUIDS[0], "a", "b"], /Usage: acrn-dm/],
    [
      "a UUID ACRN does not know",
      ["-U", "11111111-2222-3333-4444-555555555555", "-k", "KERNEL", "vm"],
      /refused UUID/,
    ],
    [
      "a missing kernel",
      ["-U", ACRN_UUIDS[0], "-k", "/nonexistent/vmlinuz", "vm"],
      /kernel file \/nonexistent\/vmlinuz failed to open/,
    ],
    [
      "a slot used twice",
      ["-s", "3,virtio-blk,nodisk", "-s", "3,virtio-blk,nodisk", "vm"],
      /3:0 already occupied/,
    ],
    ["a slot past the bus", ["-s", "32,hostbridge", "vm"], /slot 32:0/],
    ["a device it does not know", ["-s", "3,virtio-gpu", "vm"], /"virtio-gpu" is not emulated/],
    ["a missing backing file", ["-s", "3,virtio-blk,/nonexistent.img", "vm"], /Could not open backing file/],
    ["an unknown disk option", ["-s", "3,virtio-blk,KERNEL,bogus", "vm"], /Invalid device option "bogus"/],
    ["a multicast MAC", ["-s", "3,virtio-net,tap0,mac=01:00:00:00:00:01", "vm"], /Invalid MAC/],
    ["a console without a path", ["-s", "3,virtio-console,@socket:console0", "vm"], /portpath is NULL/],
    ["a bad memory size", ["-m", "lots", "vm"], /invalid memsize 'lots'/],
    [
      "-l without an lpc device",
      ["-U", ACRN_UUIDS[0], "-l", "com1,stdio", "-k", "KERNEL", "vm"],
      /-l without an lpc/,
    ],
    ["a command line of 1024 bytes", ["-B", "x".repeat(1024), "vm"], /too long/],
  ])("refuses %s", async (_what, args, message) => {
    const r = await dm(args.map((a) => a.replace("KERNEL", fx.kernel)));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
    expect(await fx.invocations("acrn-dm")).toHaveLength(1); // and still recorded its argv
  });

  it("refuses a second VM with the same UUID or name while the first runs", async () => {
    await launch(minimal("vm1"));
    const sameUuid = await dm(minimal("vm2"));
    expect(sameUuid).toMatchObject({
      code: 1,
      stderr: expect.stringContaining(`UUID ${ACRN_UUIDS[0]} is in use by vm1`),
    });
    const sameName = await dm(minimal("vm1", ACRN_UUIDS[1]));
    expect(sameName).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("a VM named vm1 already exists"),
    });
  }, 30_000);

  it("stays up until SIGINT, then exits 0 and deregisters, leaving its socket file", async () => {
    const p = await launch(minimal("vm1"));
    expect(existsSync(path.join(fx.dir, "vm1.sock"))).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(p.running).toBe(true);
    p.signal("SIGINT");
    expect(await p.exited).toEqual({ code: 0, signal: null });
    expect(existsSync(path.join(fx.fakeState, "vm1.json"))).toBe(false);
    expect(existsSync(path.join(fx.dir, "vm1.sock"))).toBe(true);
    expect(await isProcessAlive(p.pid)).toBe(false);
  }, 30_000);
});

describe("fake acrnctl", () => {
  it("fills a placeholder once and refuses everything acrn-dm refuses", async () => {
    await launch(minimal("vm1"));
    const disk = await fx.file("disk.img");
    expect(await ctl(["blkrescan", "vm2", `3,${disk}`])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("can't find vm2"),
    });
    expect(await ctl(["blkrescan", "vm1", `7,${disk}`])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("vdev info failed for Slot 7"),
    });
    expect(await ctl(["blkrescan", "vm1", `0,${disk}`])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("virtio-blk only supports rescan: found hostbridge"),
    });
    expect(await ctl(["blkrescan", "vm1", `x,${disk}`])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("Incorrect slot"),
    });
    expect(await ctl(["blkrescan", "vm1", "3,/tmp/nodisk2"])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("no valid backend file found"),
    });
    expect(await ctl(["blkrescan", "vm1", `3,${disk}.missing`])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("Error opening backing file"),
    });
    expect(await ctl(["blkrescan", "vm1"])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("acrnctl blkrescan <vm_name>"),
    });
    expect(await ctl(["pause", "vm1"])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("unknown command pause"),
    });
    expect(await ctl(["blkrescan", "vm1", `3,${disk}`])).toMatchObject({ code: 0 });
    expect(await ctl(["blkrescan", "vm1", `3,${disk}`])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("Replacing valid backend file not supported"),
    });
  }, 30_000);

  it("works from any directory", async () => {
    const r = await runCommand(FAKE_ACRNCTL, ["help"], { env: fx.env, cwd: "/" });
    expect(r).toMatchObject({ code: 0, stdout: expect.stringContaining("blkrescan") });
    expect((await fx.invocations("acrnctl"))[0]).toMatchObject({ argv: ["help"], cwd: "/" });
  });
});
