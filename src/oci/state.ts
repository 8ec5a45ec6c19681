import { createHash } from "node:crypto";
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { CocoonError } from "../errors.js";
import { isProcessAlive, readProcStat } from "../host/proc.js";

/** The spec version cocoon-runtime implements (what runc 1.1 reports). */
export const OCI_VERSION = "1.0.2-dev";

/**
 * podman runs `state` without the global flags it gave `create`, so the root must have a
 * fixed default (runc's is /run/runc).
 */
export const DEFAULT_ROOT = "/run/cocoon-runtime";
/** Overrides the default root (for podman, which calls `state` without `--root`, set it in conmon_env_vars). */
export const ROOT_ENV = "COCOON_RUNTIME_ROOT";

/** What `create` records in `<root>/<id>/state.json`; written once, never rewritten. */
const recordSchema = z.object({
  id: z.string(),
  bundle: z.string(),
  rootfs: z.string(),
  created: z.string(),
  sandboxId: z.string(),
  /** The container pid: the relay process (see relay.ts), and its start time against pid reuse. */
  pid: z.number().int().nonnegative(),
  pidStart: z.number().int().nonnegative(),
  annotations: z.record(z.string(), z.string()).default({}),
  /**
   * cocoon's settings (COCOON_ROOT, COCOON_CONFIG, COCOON_ASSETS) as `create` saw them: podman
   * runs start/state/kill/delete with only PATH in the environment, so later commands reuse these.
   */
  env: z.record(z.string(), z.string()).default({}),
});
export type ContainerRecord = z.infer<typeof recordSchema>;

export type OciStatus = "creating" | "created" | "running" | "paused" | "stopped";

/** One container's directory under the root and the files in it. */
export class ContainerDir {
  constructor(
    readonly root: string,
    readonly id: string,
  ) {}

  get dir(): string {
    return path.join(this.root, this.id);
  }
  get recordPath(): string {
    return path.join(this.dir, "state.json");
  }
  /** The relay's control socket (kept short: unix socket paths are limited to 107 bytes). */
  get socketPath(): string {
    return path.join(this.dir, "relay.sock");
  }
  get logPath(): string {
    return path.join(this.dir, "relay.log");
  }
  private flag(name: "started" | "paused"): string {
    return path.join(this.dir, name);
  }

  /** Claims the id: fails when a container with it exists. */
  async claim(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o711 });
    try {
      await mkdir(this.dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST")
        throw new CocoonError("ERR_ALREADY_EXISTS", `container with id ${this.id} already exists`);
      throw err;
    }
  }

  async exists(): Promise<boolean> {
    return stat(this.dir).then(
      () => true,
      () => false,
    );
  }

  async write(record: ContainerRecord): Promise<void> {
    const tmp = `${this.recordPath}.tmp`;
    await writeFile(tmp, JSON.stringify(record));
    await rename(tmp, this.recordPath);
  }

  /** The record, undefined while `create` has not written it yet. */
  async read(): Promise<ContainerRecord | undefined> {
    let text: string;
    try {
      text = await readFile(this.recordPath, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        if (await this.exists()) return undefined;
        throw notFound(this.id);
      }
      throw err;
    }
    const parsed = recordSchema.safeParse(JSON.parse(text));
    if (!parsed.success)
      throw new CocoonError("ERR_STATE_CORRUPT", `the state of container ${this.id} is unreadable`);
    return parsed.data;
  }

  async setFlag(name: "started" | "paused", on: boolean): Promise<void> {
    if (on) await writeFile(this.flag(name), "");
    else await rm(this.flag(name), { force: true });
  }

  async hasFlag(name: "started" | "paused"): Promise<boolean> {
    return stat(this.flag(name)).then(
      () => true,
      () => false,
    );
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** podman marks a container exited when `state` fails with these words. */
export function notFound(id: string): CocoonError {
  return new CocoonError("ERR_NOT_FOUND", `container ${id} does not exist`);
}

/** The cocoon settings in our environment, to record at create. */
export function cocoonEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ["COCOON_ROOT", "COCOON_CONFIG", "COCOON_ASSETS"]) {
    const v = process.env[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/** Makes the recorded settings ours, so the container's sandbox is found where create put it. */
export function adoptEnv(record: ContainerRecord | undefined): void {
  if (record) Object.assign(process.env, record.env);
}

/** A container's record and status, for the commands that need an existing container. */
export async function loadContainer(
  root: string,
  id: string,
): Promise<{ dir: ContainerDir; record: ContainerRecord | undefined; status: OciStatus }> {
  const dir = new ContainerDir(root, id);
  if (!(await dir.exists())) throw notFound(id);
  const record = await dir.read();
  adoptEnv(record);
  return { dir, record, status: await statusOf(dir, record) };
}

/**
 * The status, derived rather than stored so it cannot go stale: the container lives while its
 * relay process lives (the relay exits when the container's process does).
 */
export async function statusOf(dir: ContainerDir, record: ContainerRecord | undefined): Promise<OciStatus> {
  if (!record) return "creating";
  if (!(await isProcessAlive(record.pid, record.pidStart))) return "stopped";
  if (!(await dir.hasFlag("started"))) return "created";
  return (await dir.hasFlag("paused")) ? "paused" : "running";
}

/** The state JSON of the runtime spec, with runc's extra fields (rootfs, created, owner). */
export function stateJson(
  id: string,
  record: ContainerRecord | undefined,
  status: OciStatus,
): Record<string, unknown> {
  return {
    ociVersion: OCI_VERSION,
    id,
    // The spec requires pid while created/running; runc reports 0 once stopped.
    pid: record && status !== "stopped" ? record.pid : 0,
    status,
    bundle: record?.bundle ?? "",
    rootfs: record?.rootfs ?? "",
    created: record?.created ?? new Date(0).toISOString(),
    owner: "",
    ...(record && Object.keys(record.annotations).length ? { annotations: record.annotations } : {}),
  };
}

/** Every container directory under the root. */
export async function listIds(root: string): Promise<string[]> {
  try {
    return (await readdir(root, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch {
    return [];
  }
}

/** The cocoon sandbox of a container: derived from root and id (sandbox ids are ≤ 64 chars). */
export function sandboxIdOf(root: string, id: string): string {
  return `oci-${createHash("sha256")
    .update(`${path.resolve(root)}\0${id}`)
    .digest("hex")
    .slice(0, 16)}`;
}

/** The start time of a live process, to store with its pid. */
export async function startTimeOf(pid: number): Promise<number> {
  const st = await readProcStat(pid);
  if (!st) throw new CocoonError("ERR_INTERNAL", `process ${pid} ended before it was recorded`);
  return st.startTime;
}
