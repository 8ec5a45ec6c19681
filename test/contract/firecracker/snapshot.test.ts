/**
 * Snapshots of running sandboxes through the Firecracker driver (`snapshotVM`, `restoreFrom`)
 * against the fakes of Firecracker 1.0.0, 1.5.1, 1.7.0 and 1.16.1 (the version-specific
 * request bodies, the refusals and texts the real binaries give, firecracker-real-observed.md),
 * or real binaries (COCOON_FC_BIN / COCOON_JAILER_BIN). A snapshot needs a booted VM: against a
 * real Firecracker that cannot boot here, those tests skip; the refusals run.
 */
import { mkdir, open, readFile, readdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { emptyHypervisorConfig, type HypervisorConfig } from "../../../src/hypervisor/config.js";
import { FirecrackerHypervisor } from "../../../src/hypervisor/firecracker/driver.js";
import {
  FC_SNAPSHOT_FILES,
  fcSnapshotManifestSchema,
  type FcSnapshotManifest,
} from "../../../src/hypervisor/firecracker/snapshot.js";
import type { CreateVmOptions } from "../../../src/hypervisor/hypervisor.js";
import { silentLogger } from "../../../src/log.js";
import { FirecrackerClient } from "../../../src/vmm/firecracker/client.js";
import { atLeast, parseVersion } from "../../../src/vmm/firecracker/version.js";
import {
  REAL,
  exists,
  guestKernel,
  guestRootfs,
  kvmDeviceFor,
  leaks,
  processesMentioning,
  removeTmp,
  shortTmp,
  skipUnlessBootable,
  target,
  type Target,
  echoReady,
} from "./helpers.js";

/** The versions whose snapshot bodies differ: mem_file_path (1.0), mem_backend (1.1+), the 1.5/1.7 texts. */
const SNAPSHOT_VERSIONS = REAL ? ["real"] : ["1.0.0", "1.5.1", "1.7.0", "1.16.1"];

describe.each(SNAPSHOT_VERSIONS)("Firecracker snapshots through the driver, against %s", (label) => {
  let t: Target;
  const dirs: string[] = [];
  const drivers: FirecrackerHypervisor[] = [];

  beforeAll(async () => {
    t = await target(label);
  });

  afterEach(async () => {
    vi.restoreAllMocks();
    for (const d of drivers.splice(0)) await d.cleanup();
    for (const dir of dirs.splice(0)) {
      const left = await leaks(dir);
      await removeTmp(dir);
      expect(left).toEqual({ processes: [], mounts: [], sockets: [] });
    }
  });

  async function setup(o: { jailed?: boolean } = {}) {
    const dir = await shortTmp();
    dirs.push(dir);
    const config: HypervisorConfig = {
      ...emptyHypervisorConfig(),
      hypervisorPath: t.firecracker,
      jailerPath: (o.jailed ?? true) && t.jailer ? t.jailer : "",
      kernelPath: await guestKernel(dir),
      imagePath: await guestRootfs(dir),
      numVCPUs: 2,
      memorySize: 256,
      kernelParams: [{ key: "root", value: "/dev/vda" }],
    };
    const jailerBase = path.join(dir, "lib", "jails");
    await mkdir(jailerBase, { recursive: true });
    const options = (id: string): CreateVmOptions => ({
      id,
      config,
      paths: { vmDir: path.join(dir, "run", "vm", id), jailerBase },
      guestReady: echoReady,
    });
    return { dir, config, options };
  }

  function driver(): FirecrackerHypervisor {
    const kvm = kvmDeviceFor(t);
    const d = new FirecrackerHypervisor({ logger: silentLogger() }, kvm ? { kvmDevice: kvm } : {});
    drivers.push(d);
    return d;
  }

  /** A snapshot directory as snapshotVM writes it, with `manifest` patched and made-up files. */
  async function fakeSnapshotDir(dir: string, patch: Partial<FcSnapshotManifest> = {}): Promise<string> {
    const snap = path.join(dir, "snaps", "made-up");
    await mkdir(snap, { recursive: true });
    const state = Buffer.from("this is not a vmstate file\n");
    const memory = Buffer.alloc(4096);
    await writeFile(path.join(snap, FC_SNAPSHOT_FILES.vmstate), state);
    await writeFile(path.join(snap, FC_SNAPSHOT_FILES.memory), memory);
    const manifest: FcSnapshotManifest = {
      schema: 1,
      firecrackerVersion: t.version,
      jailed: true,
      vcpus: 2,
      memoryMiB: 256,
      rootfs: true,
      vsock: { guestCid: 3 },
      stateBytes: state.length,
      memoryBytes: memory.length,
      ...patch,
    };
    await writeFile(path.join(snap, FC_SNAPSHOT_FILES.manifest), JSON.stringify(manifest));
    return snap;
  }

  /** Boots a jailed VM `id` and snapshots it into <dir>/snaps/<id>; it is left paused. */
  async function bootAndSnapshot(s: Awaited<ReturnType<typeof setup>>, id: string) {
    const d = driver();
    await d.createVM(s.options(id));
    await d.startVM(20_000);
    const snap = path.join(s.dir, "snaps", id);
    await mkdir(snap, { recursive: true });
    const create = vi.spyOn(FirecrackerClient.prototype, "createSnapshot");
    await d.snapshotVM(snap);
    return { d, snap, createBodies: create.mock.calls.map((c) => c[0]) };
  }

  it("snapshots a running VM: Full, into the jail with the body this version takes, then into the directory; it stays paused", async (ctx) => {
    skipUnlessBootable(t, ctx);
    if (!t.jailer) return ctx.skip();
    const s = await setup();
    const { d, snap, createBodies } = await bootAndSnapshot(s, "src1");
    // No `version` field (gone in 1.6, a 400 there), jail paths (a chrooted Firecracker).
    expect(createBodies).toEqual([
      { snapshot_type: "Full", snapshot_path: "/snapshot-out/vmstate", mem_file_path: "/snapshot-out/mem" },
    ]);
    expect((await readdir(snap)).sort()).toEqual(["firecracker.json", "memory", "state"]);
    const manifest = fcSnapshotManifestSchema.parse(
      JSON.parse(await readFile(path.join(snap, "firecracker.json"), "utf8")),
    );
    expect(manifest).toMatchObject({
      firecrackerVersion: t.version,
      jailed: true,
      vcpus: 2,
      memoryMiB: 256,
      rootfs: true,
      vsock: { guestCid: 3 },
    });
    // Firecracker writes the whole guest memory; the files were moved, not left in the jail.
    expect(manifest.memoryBytes).toBe(256 * 2 ** 20);
    expect(await readdir(path.join(d.paths.root, "snapshot-out"))).toEqual([]);
    const client = await FirecrackerClient.connect({ socketPath: d.paths.socketPath });
    try {
      expect((await client.describeInstance()).body.state).toBe("Paused");
      await d.resumeVM();
      expect((await client.describeInstance()).body.state).toBe("Running");
    } finally {
      await client.close();
    }
  });

  it("restores into a new jailed Firecracker with the load body this version takes, and reaches guest-ready", async (ctx) => {
    skipUnlessBootable(t, ctx);
    if (!t.jailer) return ctx.skip();
    const s = await setup();
    const { d: source, snap } = await bootAndSnapshot(s, "src2");
    // The source runs on: the copy's jail paths are its own.
    await source.resumeVM();
    const load = vi.spyOn(FirecrackerClient.prototype, "loadSnapshot");
    const copy = driver();
    await copy.createVM({ ...s.options("copy2"), restoreFrom: { dir: snap } });
    await copy.startVM(20_000);
    const memBackend = atLeast(parseVersion(t.version), "1.1.0")
      ? { mem_backend: { backend_type: "File", backend_path: "/restore/mem" } }
      : { mem_file_path: "/restore/mem" };
    expect(load.mock.calls.map((c) => c[0])).toEqual([
      { snapshot_path: "/restore/vmstate", ...memBackend, resume_vm: true },
    ]);
    const client = await FirecrackerClient.connect({ socketPath: copy.paths.socketPath });
    try {
      expect((await client.describeInstance()).body.state).toBe("Running");
    } finally {
      await client.close();
    }
    // The agent channel is the copy's own socket; the driver state says it runs.
    expect(copy.agentChannel()).toEqual({
      kind: "hvsock",
      path: path.join(copy.paths.root, "v.sock"),
      port: 1024,
    });
    expect(copy.save().driver).toMatchObject({ phase: "vm-ready", paused: false, vsock: { guestCid: 3 } });
    await copy.check();
    await source.check();
    // The snapshot is intact (the jail had links to it) and can be restored again.
    expect((await readdir(snap)).sort()).toEqual(["firecracker.json", "memory", "state"]);
  });

  it("restores after its source is gone, and the copy can be snapshotted in turn", async (ctx) => {
    skipUnlessBootable(t, ctx);
    if (!t.jailer) return ctx.skip();
    const s = await setup();
    const { d: source, snap } = await bootAndSnapshot(s, "src3");
    await source.cleanup();
    // A mark in the snapshot's memory: nothing may write through the copy's link to it.
    const memory = path.join(snap, "memory");
    const mark = Buffer.from("cocoon snapshot memory mark");
    const fd = await open(memory, "r+");
    try {
      await fd.write(mark, 0, mark.length, 0);
    } finally {
      await fd.close();
    }
    const copy = driver();
    await copy.createVM({ ...s.options("copy3"), restoreFrom: { dir: snap } });
    await copy.startVM(20_000);
    const again = path.join(s.dir, "snaps", "again");
    await mkdir(again);
    await copy.snapshotVM(again);
    await copy.resumeVM();
    expect((await readdir(again)).sort()).toEqual(["firecracker.json", "memory", "state"]);
    // The new snapshot is new files; the first one's memory (still the copy's RAM) is untouched.
    expect((await stat(path.join(again, "memory"))).ino).not.toBe((await stat(memory)).ino);
    expect((await readFile(memory)).subarray(0, mark.length)).toEqual(mark);
  });

  it("a load Firecracker refuses fails with its fault message and leaves no process, socket or snapshot file", async (ctx) => {
    if (!t.jailer) return ctx.skip();
    const s = await setup();
    const snap = await fakeSnapshotDir(s.dir);
    const d = driver();
    await d.createVM({ ...s.options("bad1"), restoreFrom: { dir: snap } });
    // Firecracker answers 400 and exits (firecracker-api.md §4); 1.7 shortened the prefix.
    const prefix = atLeast(parseVersion(t.version), "1.7.0")
      ? "Load snapshot error: "
      : "Load microVM snapshot error: ";
    const err = await d.startVM(20_000).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: "ERR_VMM_API" });
    expect((err as Error).message).toContain(`could not load the snapshot in ${snap}: ${prefix}`);
    expect(d.getPids()).toEqual([]);
    expect(await processesMentioning(s.dir)).toEqual([]);
    expect(await leaks(s.dir)).toEqual({ processes: [], mounts: [], sockets: [] });
    // Nothing of the snapshot (nor the drives rebuilt for it) stays in the jail.
    expect(await exists(path.join(d.paths.root, "restore"))).toBe(false);
    expect(await exists(path.join(d.paths.root, "rootfs"))).toBe(false);
    expect(await exists(path.join(d.paths.root, "drive_0"))).toBe(false);
    // The snapshot's own files are untouched.
    expect((await readdir(snap)).sort()).toEqual(["firecracker.json", "memory", "state"]);
    await d.cleanup();
    expect(await exists(d.paths.jailDir)).toBe(false);
  });

  it("refuses a snapshot of another Firecracker version or VM shape before launching anything", async () => {
    const s = await setup();
    for (const [patch, why] of [
      [{ firecrackerVersion: "1.99.0" }, /taken by Firecracker 1\.99\.0, this one is /],
      [{ vcpus: 4 }, /4 vCPUs and 256 MiB, the configuration asks for 2 and 256/],
      [{ rootfs: false }, /had no rootfs drive/],
    ] as const) {
      const snap = await fakeSnapshotDir(s.dir, patch);
      const d = driver();
      await d.createVM({ ...s.options("inc1"), restoreFrom: { dir: snap } });
      await expect(d.startVM(20_000)).rejects.toMatchObject({
        code: "ERR_SNAPSHOT_INCOMPATIBLE",
        message: why,
      });
      expect(d.getPids()).toEqual([]);
      expect(await exists(d.paths.jailDir)).toBe(false);
    }
    // Devices cannot be added to a restored VM (it has the snapshot's).
    const d = driver();
    await d.createVM({ ...s.options("inc2"), restoreFrom: { dir: await fakeSnapshotDir(s.dir) } });
    await d.addDevice({ type: "vsock", guestCid: 7 });
    await expect(d.startVM(20_000)).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      message: /cannot add vsock devices to a Firecracker VM restored from a snapshot/,
    });
    expect(await processesMentioning(s.dir)).toEqual([]);
  });

  it("refuses a damaged snapshot (cut-short memory, no manifest) before launching anything", async () => {
    const s = await setup();
    const snap = await fakeSnapshotDir(s.dir, { memoryBytes: 8192 });
    const d = driver();
    await d.createVM({ ...s.options("dmg1"), restoreFrom: { dir: snap } });
    await expect(d.startVM(20_000)).rejects.toMatchObject({
      code: "ERR_STATE_CORRUPT",
      message: /memory is 4096 bytes, expected 8192/,
    });
    const empty = path.join(s.dir, "snaps", "empty");
    await mkdir(empty, { recursive: true });
    await d.createVM({ ...s.options("dmg1"), restoreFrom: { dir: empty } });
    await expect(d.startVM(20_000)).rejects.toMatchObject({
      code: "ERR_STATE_CORRUPT",
      message: /no readable firecracker\.json/,
    });
    expect(d.getPids()).toEqual([]);
    expect(await exists(d.paths.jailDir)).toBe(false);
  });

  it("refuses to snapshot or restore an unjailed Firecracker, which names host paths of its VM directory", async (ctx) => {
    const s = await setup({ jailed: false });
    const snap = await fakeSnapshotDir(s.dir);
    const d = driver();
    await d.createVM({ ...s.options("nojail1"), restoreFrom: { dir: snap } });
    await expect(d.startVM(20_000)).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      message: /Firecracker snapshots need the jailer/,
    });
    expect(d.getPids()).toEqual([]);
    skipUnlessBootable(t, ctx);
    const running = driver();
    await running.createVM(s.options("nojail2"));
    await running.startVM(20_000);
    const out = path.join(s.dir, "snaps", "nojail2");
    await mkdir(out, { recursive: true });
    await expect(running.snapshotVM(out)).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
    // Refused before pausing: the VM runs on, nothing was written.
    const client = await FirecrackerClient.connect({ socketPath: running.paths.socketPath });
    try {
      expect((await client.describeInstance()).body.state).toBe("Running");
    } finally {
      await client.close();
    }
    expect(await readdir(out)).toEqual([]);
  });
});
