import { mkdir, readdir, rm, utimes, writeFile } from "node:fs/promises";
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
import type { Sandbox } from "../sandbox.js";
import type { SandboxDoc } from "../state.js";
import { SNAPSHOT_DOC, type SnapshotMeta } from "./meta.js";
import { SnapshotStore } from "./snapshots.js";

/**
 * The snapshot record's checks, without VMs: what a restore refuses before any VMM starts.
 * Taking and restoring snapshots of real QEMU VMs is test/integration/snapshot.test.ts; the
 * Firecracker driver's side is test/contract/firecracker/snapshot.test.ts.
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

describe("Firecracker snapshot records", () => {
  let fc: HypervisorConfig;
  beforeEach(async () => {
    for (const f of ["firecracker", "jailer"]) await writeFile(path.join(dir, f), f);
    fc = {
      ...emptyHypervisorConfig(),
      hypervisorPath: path.join(dir, "firecracker"),
      jailerPath: path.join(dir, "jailer"),
      kernelPath: path.join(dir, "kernel"),
      imagePath: path.join(dir, "rootfs"),
      memorySize: 256,
      sharedFS: "none",
    };
  });

  function fcSandboxConfig() {
    return validateSandboxConfig({
      id: "src",
      hypervisorType: "firecracker",
      hypervisorConfig: SnapshotStore.restoreConfig(fc),
      guestProcess: { args: ["sleep", "600"] },
    });
  }

  /** What the Firecracker driver's snapshotVM leaves in the directory (see firecracker/snapshot.ts). */
  async function driverFiles(snapDir: string, memoryBytes = 4096): Promise<void> {
    await writeFile(path.join(snapDir, "state"), Buffer.alloc(100));
    await writeFile(path.join(snapDir, "memory"), Buffer.alloc(memoryBytes));
    await writeFile(
      path.join(snapDir, "firecracker.json"),
      JSON.stringify({
        schema: 1,
        firecrackerVersion: "1.7.0",
        jailed: true,
        vcpus: 1,
        memoryMiB: 256,
        rootfs: true,
        vsock: { guestCid: 3 },
        stateBytes: 100,
        memoryBytes,
      }),
    );
  }

  /** A sandbox as far as SnapshotStore.create looks at it, whose VM "saves" like the driver. */
  function stubSandbox(type: string, saved: { dirs: string[] }): Sandbox {
    const config = { ...fcSandboxConfig(), hypervisorType: type };
    return {
      id: "src",
      config,
      saveSnapshot: async (work: string) => {
        saved.dirs.push(work);
        await driverFiles(work);
        return { doc: { config, state: "running" } as unknown as SandboxDoc, namedRam: false };
      },
    } as unknown as Sandbox;
  }

  it("creates a record with the hypervisor, its version, the memory file's size and a Firecracker key", async () => {
    const saved = { dirs: [] as string[] };
    const meta = await store.create(stubSandbox("firecracker", saved), "fc1");
    expect(meta).toMatchObject({
      name: "fc1",
      hypervisorType: "firecracker",
      machine: "firecracker",
      firecrackerVersion: "1.7.0",
      stateBytes: 100,
      memoryBytes: 4096,
      key: await SnapshotStore.key(SnapshotStore.restoreConfig(fc), "firecracker"),
    });
    expect(saved.dirs).toEqual([`${store.dir("fc1")}.partial`]);
    expect((await readdir(store.dir("fc1"))).sort()).toEqual([
      "firecracker.json",
      "memory",
      "snapshot.json",
      "state",
    ]);
    expect(await store.list()).toMatchObject([{ name: "fc1", sizeBytes: 4196, restorable: true }]);
  });

  it("keys differ between QEMU and Firecracker for the same assets", async () => {
    const rc = SnapshotStore.restoreConfig(fc);
    expect(await SnapshotStore.key(rc, "firecracker")).not.toBe(await SnapshotStore.key(rc, "qemu"));
  });

  it("refuses a snapshot whose Firecracker binary changed since (another version cannot load it)", async () => {
    await store.create(stubSandbox("firecracker", { dirs: [] }), "fc2");
    const later = new Date(Date.now() + 60_000);
    await utimes(path.join(dir, "firecracker"), later, later);
    await expect(store.restore("fc2")).rejects.toMatchObject({
      code: "ERR_SNAPSHOT_INCOMPATIBLE",
      message: /Firecracker or jailer binary \(it was made by Firecracker 1\.7\.0\)/,
    });
    expect(await ctxStore.listSandboxes()).toEqual([]);
  });

  it("refuses a Firecracker snapshot to restore as another hypervisor, and a QEMU key in a Firecracker record", async () => {
    await store.create(stubSandbox("firecracker", { dirs: [] }), "fc3");
    const meta = await store.read("fc3");
    // Its record says Firecracker but its sandbox QEMU: refused, not handed to the QEMU driver.
    await writeDocument(path.join(store.dir("fc3"), "snapshot.json"), SNAPSHOT_DOC, {
      ...meta,
      sandbox: { ...meta.sandbox, config: { ...meta.sandbox.config, hypervisorType: "qemu" } },
    });
    await expect(store.restore("fc3")).rejects.toMatchObject({
      code: "ERR_SNAPSHOT_INCOMPATIBLE",
      message: /a firecracker snapshot but records a qemu sandbox/,
    });
    await writeDocument(path.join(store.dir("fc3"), "snapshot.json"), SNAPSHOT_DOC, {
      ...meta,
      key: await SnapshotStore.key(SnapshotStore.restoreConfig(fc), "qemu"),
    });
    await expect(store.restore("fc3")).rejects.toMatchObject({ code: "ERR_SNAPSHOT_INCOMPATIBLE" });
  });

  it("refuses a cut-short or missing memory file", async () => {
    await store.create(stubSandbox("firecracker", { dirs: [] }), "fc4");
    await writeFile(path.join(store.dir("fc4"), "memory"), Buffer.alloc(10));
    await expect(store.restore("fc4")).rejects.toMatchObject({
      code: "ERR_STATE_CORRUPT",
      message: /memory file is 10 bytes, expected 4096/,
    });
    await rm(path.join(store.dir("fc4"), "memory"));
    await expect(store.restore("fc4")).rejects.toMatchObject({ message: /memory file is missing/ });
  });

  it("still refuses ACRN with its own reason, and other hypervisors, before anything is written", async () => {
    const saved = { dirs: [] as string[] };
    await expect(store.create(stubSandbox("acrn", saved), "a1")).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      message: /ACRN cannot snapshot a running VM/,
    });
    await expect(store.create(stubSandbox("mock", saved), "m1")).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      message: /implemented for QEMU and Firecracker only, not mock/,
    });
    expect(saved.dirs).toEqual([]);
    expect(await readdir(store.root).catch(() => [])).toEqual([]);
  });
});
