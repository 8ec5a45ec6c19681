import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { guestResources, readBundleSpec } from "./spec.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "cocoon-oci-spec-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("config.json → what the guest applies", () => {
  it("linux.resources: memory limit, CFS quota as CPUs, pids; unlimited values set nothing", () => {
    expect(
      guestResources({
        memory: { limit: 64 << 20 },
        cpu: { quota: 50_000, period: 100_000 },
        pids: { limit: 99 },
      }),
    ).toEqual({ memoryBytes: 64 << 20, cpus: 0.5, pidsLimit: 99 });
    expect(guestResources({ cpu: { quota: 150_000 } })).toEqual({ cpus: 1.5 });
    expect(guestResources({ memory: { limit: -1 }, cpu: { quota: -1 }, pids: { limit: 0 } })).toBeUndefined();
    expect(guestResources(undefined)).toBeUndefined();
  });

  it("reads rlimits, resources, mounts and the network namespace path (podman's shape)", async () => {
    await writeFile(
      path.join(dir, "config.json"),
      JSON.stringify({
        ociVersion: "1.0.2",
        process: {
          args: ["sh"],
          cwd: "/",
          rlimits: [
            { type: "RLIMIT_NOFILE", hard: 1048576, soft: 1048576 },
            { type: "RLIMIT_NPROC", hard: 32768, soft: 32768 },
          ],
        },
        root: { path: "rootfs" },
        mounts: [{ destination: "/proc", type: "proc", source: "proc", options: ["nosuid"] }],
        linux: {
          namespaces: [{ type: "pid" }, { type: "network", path: "/run/netns/netns-1" }],
          resources: { devices: [{ allow: false, access: "rwm" }], pids: { limit: 2048 } },
        },
      }),
    );
    const spec = await readBundleSpec(dir);
    expect(spec).toMatchObject({
      rootPath: path.join(dir, "rootfs"),
      netnsPath: "/run/netns/netns-1",
      rlimits: [
        { type: "RLIMIT_NOFILE", hard: 1048576, soft: 1048576 },
        { type: "RLIMIT_NPROC", hard: 32768, soft: 32768 },
      ],
      resources: { pidsLimit: 2048 },
      mounts: [{ destination: "/proc", type: "proc", source: "proc", options: ["nosuid"] }],
    });
  });

  it("a soft rlimit above its hard one is refused as invalid config", async () => {
    await writeFile(
      path.join(dir, "config.json"),
      JSON.stringify({ process: { args: ["sh"], rlimits: [{ type: "RLIMIT_NOFILE", hard: 1, soft: 2 }] } }),
    );
    await expect(readBundleSpec(dir)).rejects.toMatchObject({ code: "ERR_INVALID_CONFIG" });
  });
});
