import { mkdir, readdir, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../../test/helpers/tmp.js";
import { emptyHypervisorConfig, type HypervisorConfig } from "../../hypervisor/config.js";
import "../../hypervisor/drivers.js";
import { silentLogger } from "../../log.js";
import { writeDocument } from "../../store/atomic.js";
import { RuntimePaths, rootsFromBase } from "../../store/paths.js";
import { Store } from "../../store/store.js";
import { validateSandboxConfig } from "../config.js";
import { COCOON_VERSION } from "../factory/version.js";
import { SNAPSHOT_DOC, type SnapshotMeta } from "./meta.js";
import { SnapshotStore } from "./snapshots.js";

/**
 * The snapshot record's checks, without VMs: what a restore refuses before any QEMU starts.
 * Taking and restoring snapshots of real VMs is test/integration/snapshot.test.ts.
 */

let dir: string;
let cleanup: () => Promise<void>;
let store: SnapshotStore;
let ctxStore: Store;
let hc: HypervisorConfig;

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  const paths = new RuntimePaths({ ...rootsFromBase(dir), assetsDir: path.join(dir, "assets") });
  ctxStore = new Store(paths);
  store = new SnapshotStore({ paths, store: ctxStore, logger: silentLogger() });
  // The key looks at the files' identity only: stand-ins do.
  for (const f of ["qemu", "kernel", "rootfs"]) await writeFile(path.join(dir, f), f);
  hc = {
    ...emptyHypervisorConfig(),
    hypervisorPath: path.join(dir, "qemu"),
    kernelPath: path.join(dir, "kernel"),
    imagePath: path.join(dir, "rootfs"),
    memorySize: 512,
    hypervisorMachineType: "microvm",
    sharedFS: "none",
  };
});
afterEach(() => cleanup());

/** A snapshot record as `create` writes it, with `state` of `stateBytes` bytes. */
async function writeSnapshot(
  name: string,
  patch: Partial<SnapshotMeta> = {},
  stateBytes = 1000,
): Promise<void> {
  const restoreConfig = SnapshotStore.restoreConfig(hc);
  const config = validateSandboxConfig({
    id: "src",
    hypervisorType: "qemu",
    hypervisorConfig: restoreConfig,
    guestProcess: { args: ["sleep", "600"] },
  });
  const snapDir = store.dir(name);
  await mkdir(snapDir, { recursive: true });
  await writeFile(path.join(snapDir, "state"), Buffer.alloc(stateBytes));
  await writeDocument(path.join(snapDir, "snapshot.json"), SNAPSHOT_DOC, {
    name,
    createdAt: new Date().toISOString(),
    cocoonVersion: COCOON_VERSION,
    hostArch: process.arch,
    hypervisorType: "qemu",
    machine: "microvm",
    memoryMiB: 512,
    vcpus: 1,
    key: await SnapshotStore.key(restoreConfig),
    stateBytes: 1000,
    namedRam: false,
    source: "src",
    sandbox: {
      config: {
        ...config,
        hostname: "src",
        hypervisorConfig: restoreConfig as unknown as Record<string, unknown>,
      },
      state: "running",
    },
    ...patch,
  });
}

describe("snapshot records", () => {
  it("lists a sound snapshot as restorable", async () => {
    await writeSnapshot("good");
    expect(await store.list()).toMatchObject([
      { name: "good", source: "src", memoryMiB: 512, restorable: true },
    ]);
  });

  it("refuses another cocoon version, another architecture, another machine type", async () => {
    await writeSnapshot("old", { cocoonVersion: "0.0.1" });
    await writeSnapshot("arm", { hostArch: "arm64" });
    await writeSnapshot("q35", { machine: "q35" });
    for (const [name, why] of [
      ["old", /made by cocoon 0\.0\.1/],
      ["arm", /made on arm64/],
      ["q35", /machine type q35/],
    ] as const) {
      await expect(store.restore(name)).rejects.toMatchObject({
        code: "ERR_SNAPSHOT_INCOMPATIBLE",
        message: why,
      });
    }
    // Refused before anything was made.
    expect(await ctxStore.listSandboxes()).toEqual([]);
  });

  it("refuses a snapshot whose kernel changed since", async () => {
    await writeSnapshot("s");
    const later = new Date(Date.now() + 60_000);
    await utimes(path.join(dir, "kernel"), later, later);
    await expect(store.restore("s")).rejects.toMatchObject({
      code: "ERR_SNAPSHOT_INCOMPATIBLE",
      message: /QEMU binary, kernel, rootfs or VM shape/,
    });
  });

  it("refuses a cut-short or missing state file, and a snapshot that does not exist", async () => {
    await writeSnapshot("short", {}, 10);
    await expect(store.restore("short")).rejects.toMatchObject({ code: "ERR_STATE_CORRUPT" });
    await expect(store.restore("nope")).rejects.toMatchObject({ code: "ERR_NOT_FOUND" });
    await expect(store.restore("../x")).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });

  it("rm removes the snapshot and its half-made twin, and says when there was none", async () => {
    await writeSnapshot("gone");
    await mkdir(`${store.dir("gone")}.partial`);
    expect(await store.remove("gone")).toBe(true);
    expect(await readdir(store.root)).toEqual([]);
    expect(await store.remove("gone")).toBe(false);
  });
});
