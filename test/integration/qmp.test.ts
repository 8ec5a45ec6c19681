import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { QmpClient, QmpError } from "../../src/vmm/qemu/qmp.js";
import { testRoot } from "../helpers/env.js";

// A QEMU with no machine at all still serves QMP: enough to test the client for real, fast.
let root: string;
let cleanup: () => Promise<void>;
let qemu: ChildProcess;
let socket: string;

beforeEach(async () => {
  ({ root, cleanup } = await testRoot());
  socket = path.join(root, "qmp.sock");
  qemu = spawn(
    "qemu-system-x86_64",
    ["-M", "none", "-nodefaults", "-nographic", "-S", "-qmp", `unix:${socket},server=on,wait=off`],
    {
      stdio: "ignore",
    },
  );
});

afterEach(async () => {
  if (qemu.exitCode === null && qemu.signalCode === null) {
    qemu.kill("SIGKILL");
    await new Promise((r) => qemu.once("exit", r));
  }
  await cleanup();
});

describe("QMP client against a real QEMU", () => {
  it("negotiates, runs commands and maps errors", async () => {
    const qmp = await QmpClient.connect(socket, { timeoutMs: 10_000 });
    expect(qmp.version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(await qmp.execute("query-status")).toMatchObject({ status: "prelaunch", running: false });
    const err = await qmp.execute("no-such-command").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(QmpError);
    expect(err).toMatchObject({ code: "ERR_VMM_API", errorClass: "CommandNotFound" });
    await expect(qmp.execute("device_del", { id: "nope" })).rejects.toMatchObject({
      errorClass: "DeviceNotFound",
    });
    qmp.close();
  });

  it("delivers events (STOP, RESUME) and matches answers among them", async () => {
    const qmp = await QmpClient.connect(socket, { timeoutMs: 10_000 });
    const events: string[] = [];
    qmp.on("event", (e: { event: string }) => events.push(e.event));
    const resumed = qmp.waitForEvent("RESUME");
    await qmp.execute("cont");
    await resumed;
    const stopped = qmp.waitForEvent("STOP");
    await qmp.execute("stop");
    await stopped;
    expect(events).toEqual(expect.arrayContaining(["RESUME", "STOP"]));
    expect((await qmp.execute("query-status")) as { status: string }).toMatchObject({ status: "paused" });
    await expect(qmp.waitForEvent("DEVICE_DELETED", () => true, 100)).rejects.toMatchObject({
      code: "ERR_VMM_TIMEOUT",
    });
    qmp.close();
  });

  it("fails pending commands when QEMU exits, and sees SHUTDOWN", async () => {
    const qmp = await QmpClient.connect(socket, { timeoutMs: 10_000 });
    const closed = new Promise<Error>((r) => qmp.once("close", r));
    await qmp.execute("quit").catch(() => undefined);
    expect((await closed).message).toMatch(/closed/);
    await expect(qmp.execute("query-status")).rejects.toMatchObject({ code: "ERR_VMM_EXITED" });
  });

  it("times out on a socket that never appears", async () => {
    await expect(QmpClient.connect(path.join(root, "absent.sock"), { timeoutMs: 200 })).rejects.toMatchObject(
      {
        code: "ERR_VMM_TIMEOUT",
      },
    );
  });
});
