import { spawn } from "node:child_process";
import { once } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { ContainerDir, loadContainer, startTimeOf } from "./state.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe("a container's status follows its relay process", () => {
  it("created → running → paused → stopped when the relay ends; pid reuse is not mistaken for it", async () => {
    const { dir: root, cleanup } = await tempDir("oci-state-");
    cleanups.push(cleanup);
    const relay = spawn("sleep", ["1000"], { stdio: "ignore" });
    cleanups.push(async () => void relay.kill("SIGKILL"));
    const pid = relay.pid!;
    const dir = new ContainerDir(root, "c");
    await dir.claim();
    await expect(dir.claim()).rejects.toThrow(/already exists/);
    expect((await loadContainer(root, "c")).status).toBe("creating");
    const record = {
      id: "c",
      bundle: "/b",
      rootfs: "/b/rootfs",
      created: new Date().toISOString(),
      sandboxId: "oci-0",
      pid,
      pidStart: await startTimeOf(pid),
      annotations: {},
      env: {},
    };
    await dir.write(record);
    expect((await loadContainer(root, "c")).status).toBe("created");
    await dir.setFlag("started", true);
    expect((await loadContainer(root, "c")).status).toBe("running");
    await dir.setFlag("paused", true);
    expect((await loadContainer(root, "c")).status).toBe("paused");
    await dir.setFlag("paused", false);
    // Same pid, another start time: a recycled pid is not the container.
    await dir.write({ ...record, pidStart: record.pidStart + 1 });
    expect((await loadContainer(root, "c")).status).toBe("stopped");
    await dir.write(record);
    relay.kill("SIGKILL");
    await once(relay, "exit");
    expect((await loadContainer(root, "c")).status).toBe("stopped");
    await dir.remove();
    await expect(loadContainer(root, "c")).rejects.toThrow("container c does not exist");
  });
});
