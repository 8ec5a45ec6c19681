import { describe, expect, it } from "vitest";
import { emptyHypervisorConfig } from "./config.js";
import { MockHypervisor } from "./mock.js";
import { newHypervisor } from "./registry.js";
import { silentLogger } from "../log.js";
import { Store } from "../store/store.js";
import { RuntimePaths } from "../store/paths.js";

const config = { ...emptyHypervisorConfig(), kernelPath: "/k", imagePath: "/i" };
const paths = { vmDir: "/tmp/vm", jailerBase: "/tmp/jail" };

describe("MockHypervisor", () => {
  it("walks the VM lifecycle and refuses invalid transitions", async () => {
    const hv = new MockHypervisor();
    await expect(hv.startVM(1000)).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
    await hv.createVM({ id: "s1", config, paths });
    expect(hv.hypervisorConfig().memorySize).toBe(2048);
    await hv.addDevice({ type: "block", id: "d0", path: "/x" });
    await expect(hv.hotplugAddDevice({ type: "block", id: "d1", path: "/y" })).rejects.toMatchObject({
      code: "ERR_INVALID_STATE",
    });
    await hv.startVM(1000);
    expect(hv.devices).toHaveLength(1);
    await expect(hv.resumeVM()).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
    await hv.pauseVM();
    await hv.saveVM();
    await hv.resumeVM();
    const added = await hv.hotplugAddDevice({ type: "block", id: "d1", path: "/y" });
    expect(added).toMatchObject({ guestPath: "/dev/vdc" });
    await hv.hotplugRemoveDevice(added);
    expect((await hv.resizeVCPUs(8)).newVCPUs).toBe(hv.hypervisorConfig().defaultMaxVCPUs);
    await hv.stopVM();
    await expect(hv.check()).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
    expect(hv.calls.slice(0, 3)).toEqual(["startVM(1000)", "createVM", "addDevice(block)"]);
  });

  it("validates its config like a real driver", async () => {
    await expect(
      new MockHypervisor().createVM({ id: "s", config: emptyHypervisorConfig(), paths }),
    ).rejects.toMatchObject({
      code: "ERR_INVALID_CONFIG",
    });
  });

  it("persists and restores its state", async () => {
    const a = new MockHypervisor();
    await a.createVM({ id: "s", config, paths });
    await a.startVM(1);
    const b = new MockHypervisor();
    await b.createVM({ id: "s", config, paths });
    b.load(a.save());
    expect(b.state).toBe("running");
  });

  it("is available from the registry; unregistered drivers are a clear error", () => {
    const ctx = {
      logger: silentLogger(),
      store: new Store(new RuntimePaths({ stateRoot: "/tmp/s", libRoot: "/tmp/l", assetsDir: "/tmp/a" })),
    };
    expect(newHypervisor("mock", ctx).type).toBe("mock");
  });
});
