import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { emptyHypervisorConfig, type HypervisorConfig } from "../config.js";
import { FirecrackerHypervisor, firecrackerDriveId, firecrackerId, virtioBlkName } from "./driver.js";

describe("Firecracker driver helpers", () => {
  it("maps cocoon ids to Firecracker ids and device ids", () => {
    expect(firecrackerId("sb_1.test")).toBe("sb-1-test");
    expect(firecrackerDriveId("data-1.img")).toBe("data_1_img");
    expect(() => firecrackerDriveId("")).toThrow();
  });

  it("names virtio-blk disks in probe order", () => {
    expect([0, 1, 25, 26, 27].map(virtioBlkName)).toEqual([
      "/dev/vda",
      "/dev/vdb",
      "/dev/vdz",
      "/dev/vdaa",
      "/dev/vdab",
    ]);
  });
});

describe("FirecrackerHypervisor.createVM", () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  async function config(): Promise<{ config: HypervisorConfig; dir: string }> {
    const dir = await mkdtemp(path.join(os.tmpdir(), "cfcu-"));
    dirs.push(dir);
    return {
      dir,
      config: {
        ...emptyHypervisorConfig(),
        hypervisorPath: "/usr/bin/firecracker",
        kernelPath: "/k",
        imagePath: "/i",
      },
    };
  }

  it("refuses a socket path over the unix limit, with a hint", async () => {
    const { config: c, dir } = await config();
    const d = new FirecrackerHypervisor();
    await expect(
      d.createVM({
        id: "x".repeat(60),
        config: c,
        paths: { vmDir: path.join(dir, "vm"), jailerBase: path.join(dir, "jails") },
      }),
    ).rejects.toMatchObject({
      code: "ERR_INVALID_CONFIG",
      message: expect.stringMatching(
        /Firecracker API socket path .* is \d+ bytes; unix sockets allow at most 107/,
      ),
    });
  });

  it("refuses unknown hypervisor parameters and a missing binary", async () => {
    const { config: c, dir } = await config();
    const paths = { vmDir: path.join(dir, "vm"), jailerBase: path.join(dir, "jails") };
    await expect(
      new FirecrackerHypervisor().createVM({
        id: "a",
        config: { ...c, hypervisorParams: [{ key: "node", value: "0" }] },
        paths,
      }),
    ).rejects.toThrow(/no hypervisor parameter "node=0"/);
    await expect(
      new FirecrackerHypervisor().createVM({ id: "a", config: { ...c, hypervisorPath: "" }, paths }),
    ).rejects.toThrow(/no Firecracker binary/);
  });

  it("lays the VM out under the jail base, with hybrid vsock as the agent channel", async () => {
    const { config: c, dir } = await config();
    const d = new FirecrackerHypervisor();
    await d.createVM({
      id: "sb_1",
      config: c,
      paths: { vmDir: path.join(dir, "vm"), jailerBase: path.join(dir, "jails") },
    });
    expect(d.paths.root).toBe(path.join(dir, "jails", "firecracker", "sb-1", "root"));
    expect(d.paths.socketPath).toBe(path.join(d.paths.root, "api.socket"));
    expect(d.agentChannel()).toEqual({ kind: "hvsock", path: path.join(d.paths.root, "v.sock"), port: 1024 });
    expect(d.getPids()).toEqual([]);
    expect(await d.resizeVCPUs()).toEqual({ oldVCPUs: 1, newVCPUs: 1 });
    await expect(d.hotplugAddDevice({ type: "block", id: "b", path: "/x" })).rejects.toThrow(
      /is not running/,
    );
    await expect(d.addDevice({ type: "fs", tag: "t", hostPath: "/", fsType: "virtio-fs" })).rejects.toThrow(
      /cannot cold-plug fs/,
    );
    await d.cleanup();
    await d.cleanup();
  });
});
