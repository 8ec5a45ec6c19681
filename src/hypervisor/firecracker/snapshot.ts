/**
 * Snapshots of running sandboxes on Firecracker (`snapshotVM` and `restoreFrom`): a Full
 * snapshot (`PUT /snapshot/create`) of the paused VM, moved out of the jail into the snapshot
 * directory, and a restore that loads it (`PUT /snapshot/load`) into a fresh, jailed Firecracker.
 *
 * The directory holds `state` (Firecracker's vmstate), `memory` (the guest's RAM) and
 * `firecracker.json` (the manifest below). Firecracker restores devices at the paths they had
 * when the snapshot was taken (firecracker-api.md §6): drives, the vsock socket. A jailed
 * Firecracker sees chroot paths ("/rootfs", "/drive_0", "/v.sock") that every jail of the same
 * configuration has, so the restore rebuilds them in the new jail. An unjailed Firecracker is
 * given host paths into its own VM directory, which a restored sandbox (another id) cannot have:
 * snapshots need the jailer.
 */
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { HypervisorError, errnoCode, isCocoonError, messageOf } from "../../errors.js";
import type { FirecrackerClient } from "../../vmm/firecracker/client.js";
import { FirecrackerApiError } from "../../vmm/firecracker/errors.js";
import type { Jail } from "../../vmm/firecracker/jail.js";
import { snapshotCreateBody, snapshotLoadBody } from "../../vmm/firecracker/snapshot.js";
import { compareVersions, type FcVersion } from "../../vmm/firecracker/version.js";
import { assetPath, type HypervisorConfig } from "../config.js";
import type { DriverState } from "./state.js";

/** The files of a Firecracker snapshot directory. */
export const FC_SNAPSHOT_FILES = {
  vmstate: "state",
  memory: "memory",
  manifest: "firecracker.json",
} as const;

/**
 * Where the files sit in the jail while Firecracker writes them (create) and reads them
 * (restore: links to the snapshot's own files). Apart from each other and from saveVM's
 * `/snapshot/` (templates): Firecracker truncates an existing target, and a target that is a
 * link to a snapshot's memory would wipe that snapshot and the RAM of the VM it backs.
 */
const OUT_DIR = "/snapshot-out";
const OUT_VMSTATE = `${OUT_DIR}/vmstate`;
const OUT_MEMORY = `${OUT_DIR}/mem`;
const IN_DIR = "/restore";
const IN_VMSTATE = `${IN_DIR}/vmstate`;
const IN_MEMORY = `${IN_DIR}/mem`;

export const fcSnapshotManifestSchema = z.object({
  schema: z.literal(1),
  /** The Firecracker that took it: only the same version restores it (vmstate formats differ). */
  firecrackerVersion: z.string(),
  /** Always true: an unjailed Firecracker's snapshot names host paths of its own VM directory. */
  jailed: z.literal(true),
  vcpus: z.number().int().positive(),
  memoryMiB: z.number().int().positive(),
  /** Whether the VM had the read-only rootfs drive (at /rootfs), which the restore puts back. */
  rootfs: z.boolean(),
  /** The vsock device (its socket is /v.sock in the jail). */
  vsock: z.object({ guestCid: z.number().int().min(3) }),
  /** The balloon, when the VM had one: how many MiB it held. */
  balloonMib: z.number().int().min(0).optional(),
  stateBytes: z.number().int().positive(),
  memoryBytes: z.number().int().positive(),
});
export type FcSnapshotManifest = z.infer<typeof fcSnapshotManifestSchema>;

/** What the driver lends the snapshot code: its state, jail, config and API client. */
export interface FcSnapshotHost {
  st: DriverState;
  jail: Jail;
  config: HypervisorConfig;
  /** Puts a file into the running Firecracker's jail (checked to be seen there); the path to give it. */
  place(source: string, jailPath: string, readOnly: boolean): Promise<string>;
  /** The jail paths a booted VM of this config has: the rootfs drive, the pool placeholders, the vsock socket. */
  layout: { rootfs: string; pool: string[]; vsock: string };
}

/** The manifest of a snapshot directory; ERR_STATE_CORRUPT when missing or invalid. */
export async function readFcSnapshotManifest(dir: string): Promise<FcSnapshotManifest> {
  const file = path.join(dir, FC_SNAPSHOT_FILES.manifest);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new HypervisorError(
      "ERR_STATE_CORRUPT",
      `the Firecracker snapshot in ${dir} has no readable ${FC_SNAPSHOT_FILES.manifest}: ${messageOf(err)}`,
      { cause: err, details: { dir } },
    );
  }
  const r = fcSnapshotManifestSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new HypervisorError(
      "ERR_STATE_CORRUPT",
      `the Firecracker snapshot manifest ${file} is invalid at ${issue?.path.join(".") || "<root>"}: ${issue?.message ?? "?"}`,
      { details: { dir } },
    );
  }
  return r.data;
}

function unjailedRefusal(what: string): HypervisorError {
  return new HypervisorError(
    "ERR_NOT_SUPPORTED",
    `Firecracker snapshots need the jailer: cannot ${what} an unjailed Firecracker VM (its snapshot would name host paths of its own VM directory, drives and vsock socket, which a restored sandbox does not have)`,
    { hint: "configure the jailer ([hypervisor.firecracker] jailer_path) for sandboxes to be snapshotted" },
  );
}

/** Renames a file, or copies it when the rename crosses filesystems. */
async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if (errnoCode(err) !== "EXDEV") throw err;
    await copyFile(from, to);
    await rm(from, { force: true });
  }
}

/**
 * Pauses the VM (it stays paused, as QEMU's does: the caller resumes it), has Firecracker write
 * a Full snapshot into the jail, and moves the files into `dir` with the manifest.
 */
export async function takeFcSnapshot(
  h: FcSnapshotHost,
  client: FirecrackerClient,
  dir: string,
): Promise<void> {
  const { st, jail } = h;
  if (!st.jailed) throw unjailedRefusal("snapshot");
  if (st.slots.length > 0)
    throw new HypervisorError(
      "ERR_NOT_SUPPORTED",
      `cannot snapshot the Firecracker VM ${st.id}: it has hot-plugged drives (${st.slots.map((s) => s.deviceId).join(", ")}), which a snapshot does not carry`,
    );
  if (!st.vsock)
    throw new HypervisorError(
      "ERR_INVALID_STATE",
      `the Firecracker VM ${st.id} has no vsock device to restore`,
    );
  if (!st.paused) {
    await client.pause();
    st.paused = true;
  }
  const files = [jail.hostPath(OUT_VMSTATE), jail.hostPath(OUT_MEMORY)];
  const out = {
    vmstate: path.join(dir, FC_SNAPSHOT_FILES.vmstate),
    memory: path.join(dir, FC_SNAPSHOT_FILES.memory),
  };
  try {
    await mkdir(jail.hostPath(OUT_DIR), { recursive: true, mode: 0o700 });
    // Fresh files: whatever was there (a previous attempt) is not written through.
    for (const f of files) await rm(f, { force: true });
    await client.createSnapshot(
      snapshotCreateBody(client.version, {
        type: "Full",
        snapshotPath: jail.fcPath(OUT_VMSTATE),
        memFilePath: jail.fcPath(OUT_MEMORY),
      }),
    );
    await moveFile(files[0]!, out.vmstate);
    await moveFile(files[1]!, out.memory);
    const manifest: FcSnapshotManifest = {
      schema: 1,
      firecrackerVersion: client.version.raw,
      jailed: true,
      vcpus: h.config.numVCPUs,
      memoryMiB: h.config.memorySize,
      rootfs: assetPath(h.config, "image") !== "",
      vsock: { guestCid: st.vsock.guestCid },
      ...(st.balloon ? { balloonMib: st.balloon.amountMib } : {}),
      stateBytes: (await stat(out.vmstate)).size,
      memoryBytes: (await stat(out.memory)).size,
    };
    await writeFile(path.join(dir, FC_SNAPSHOT_FILES.manifest), `${JSON.stringify(manifest)}\n`, {
      mode: 0o600,
    });
  } catch (err) {
    for (const f of [...files, out.vmstate, out.memory]) await rm(f, { force: true }).catch(() => undefined);
    throw err;
  }
}

/** Same major.minor.patch (a "-dev" suffix or build tail does not change the vmstate format). */
function sameVersion(a: FcVersion | string, b: FcVersion | string): boolean {
  return compareVersions(a, b) === 0;
}

/**
 * Before anything is launched: the snapshot's manifest, checked against this driver's config
 * and the Firecracker binary's version (`--version`). ERR_SNAPSHOT_INCOMPATIBLE when it cannot
 * be loaded here.
 */
export async function checkFcSnapshot(
  st: DriverState,
  config: HypervisorConfig,
  dir: string,
  binaryVersion: () => Promise<FcVersion>,
): Promise<FcSnapshotManifest> {
  if (!st.jailed) throw unjailedRefusal("restore a snapshot into");
  const m = await readFcSnapshotManifest(dir);
  const incompatible = (why: string) =>
    new HypervisorError(
      "ERR_SNAPSHOT_INCOMPATIBLE",
      `cannot restore the Firecracker snapshot in ${dir}: ${why}`,
      {
        details: { dir, firecrackerVersion: m.firecrackerVersion },
        hint: "restore it with the Firecracker version and VM shape that took it, or take a new snapshot",
      },
    );
  const running = await binaryVersion();
  if (!sameVersion(running, m.firecrackerVersion))
    throw incompatible(`it was taken by Firecracker ${m.firecrackerVersion}, this one is ${running.raw}`);
  if (m.vcpus !== config.numVCPUs || m.memoryMiB !== config.memorySize)
    throw incompatible(
      `it holds a VM of ${m.vcpus} vCPUs and ${m.memoryMiB} MiB, the configuration asks for ${config.numVCPUs} and ${config.memorySize}`,
    );
  if (m.rootfs !== (assetPath(config, "image") !== ""))
    throw incompatible(
      m.rootfs ? "it had a rootfs drive, the configuration has none" : "it had no rootfs drive",
    );
  for (const [file, bytes] of [
    [FC_SNAPSHOT_FILES.vmstate, m.stateBytes],
    [FC_SNAPSHOT_FILES.memory, m.memoryBytes],
  ] as const) {
    const size = (await stat(path.join(dir, file)).catch(() => undefined))?.size;
    if (size !== bytes)
      throw new HypervisorError(
        "ERR_STATE_CORRUPT",
        `the Firecracker snapshot in ${dir} is damaged: ${file} is ${size === undefined ? "missing" : `${size} bytes, expected ${bytes}`}`,
        { details: { dir, file } },
      );
  }
  return m;
}

/**
 * Into a fresh Firecracker (api-ready, nothing configured): rebuilds the jail paths the VM's
 * devices had, places the snapshot's files, and loads it resumed. On failure the files it put
 * into the jail are taken out again (Firecracker itself exits after a refused load).
 */
export async function loadFcSnapshot(
  h: FcSnapshotHost,
  client: FirecrackerClient,
  dir: string,
  m: FcSnapshotManifest,
): Promise<void> {
  const { st, jail } = h;
  const placed: string[] = [];
  try {
    const image = assetPath(h.config, "image");
    if (image) {
      placed.push(h.layout.rootfs);
      await h.place(image, h.layout.rootfs, true);
    }
    for (const p of h.layout.pool) {
      placed.push(p);
      await jail.create(p);
    }
    placed.push(IN_VMSTATE, IN_MEMORY);
    const snapshotPath = await h.place(path.join(dir, FC_SNAPSHOT_FILES.vmstate), IN_VMSTATE, true);
    const memPath = await h.place(path.join(dir, FC_SNAPSHOT_FILES.memory), IN_MEMORY, true);
    // resume_vm exists from 1.0 (firecracker-v1.0-observed.md): the guest runs on at once.
    const body = snapshotLoadBody(client.version, {
      snapshotPath,
      backend: "File",
      backendPath: memPath,
      resume: true,
    });
    try {
      await client.loadSnapshot(body);
    } catch (err) {
      if (err instanceof FirecrackerApiError)
        throw new HypervisorError(
          "ERR_VMM_API",
          `Firecracker ${client.version.raw} could not load the snapshot in ${dir}: ${err.faultMessage}`,
          { cause: err, details: { dir, faultMessage: err.faultMessage } },
        );
      throw err;
    }
  } catch (err) {
    for (const p of placed) await jail.remove(p).catch(() => undefined);
    await rm(jail.hostPath(IN_DIR), { recursive: true, force: true }).catch(() => undefined);
    st.resources = jail.resources();
    if (isCocoonError(err)) throw err;
    throw new HypervisorError(
      "ERR_VMM_START",
      `restoring the Firecracker snapshot in ${dir} failed: ${messageOf(err)}`,
      {
        cause: err,
      },
    );
  }
  st.vsock = {
    guestCid: m.vsock.guestCid,
    jailPath: h.layout.vsock,
    hostPath: jail.hostPath(h.layout.vsock),
  };
  if (m.balloonMib !== undefined) st.balloon = { amountMib: m.balloonMib };
  st.resources = jail.resources();
}
