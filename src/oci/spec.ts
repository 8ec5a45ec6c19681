import { readFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { CocoonError } from "../errors.js";
import { rlimitSchema, type Rlimit } from "../agent/protocol/container-setup.js";
import type { ContainerResources } from "../agent/protocol/resources.js";
import type { ProcessConfig } from "../sandbox/config.js";
import { ociMountSchema, type OciMount } from "./mounts.js";

/**
 * An OCI bundle's config.json, as far as a VM runtime honours it. Shared by the containerd
 * shim (src/shim/) and the runc-compatible runtime (src/oci/): both turn a bundle into a
 * cocoon sandbox with one container.
 */

/** The parts of an OCI process cocoon passes on (config.json's `process`, an exec's process). */
export const ociProcessSchema = z.object({
  terminal: z.boolean().optional(),
  user: z
    .object({ uid: z.number().int().nonnegative(), gid: z.number().int().nonnegative() })
    .partial()
    .optional(),
  args: z.array(z.string()).min(1, "the process has no args"),
  env: z.array(z.string()).optional(),
  cwd: z.string().optional(),
  consoleSize: z.object({ height: z.number(), width: z.number() }).optional(),
  rlimits: z.array(rlimitSchema()).optional(),
});
export type OciProcess = z.infer<typeof ociProcessSchema>;

const namespaceSchema = z.object({ type: z.string(), path: z.string().optional() });

/** linux.resources as far as the guest applies them (runc cgroups in the VM). */
const linuxResourcesSchema = z
  .object({
    memory: z.object({ limit: z.number().int().optional() }).passthrough().optional(),
    cpu: z
      .object({ quota: z.number().int().optional(), period: z.number().int().optional() })
      .passthrough()
      .optional(),
    pids: z.object({ limit: z.number().int().optional() }).passthrough().optional(),
  })
  .passthrough();

const specSchema = z.object({
  process: ociProcessSchema,
  root: z.object({ path: z.string(), readonly: z.boolean().optional() }).optional(),
  hostname: z.string().optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  mounts: z.array(ociMountSchema).optional(),
  linux: z
    .object({
      namespaces: z.array(namespaceSchema).optional(),
      resources: linuxResourcesSchema.optional(),
    })
    .passthrough()
    .optional(),
});

/**
 * The container's limits in the guest from linux.resources: a memory limit, a CFS quota (as
 * CPUs), a pids limit. Unset, zero or negative (unlimited, -1) values set nothing.
 */
export function guestResources(
  r: z.infer<typeof linuxResourcesSchema> | undefined,
): ContainerResources | undefined {
  if (!r) return undefined;
  const out: ContainerResources = {};
  const memory = r.memory?.limit;
  if (memory !== undefined && memory > 0) out.memoryBytes = memory;
  const quota = r.cpu?.quota;
  if (quota !== undefined && quota > 0) out.cpus = quota / (r.cpu?.period || 100_000);
  const pids = r.pids?.limit;
  if (pids !== undefined && pids > 0) out.pidsLimit = pids;
  return Object.keys(out).length ? out : undefined;
}

export interface BundleSpec {
  process: ProcessConfig;
  rootPath: string;
  readonly: boolean;
  hostname?: string;
  annotations: Record<string, string>;
  /** linux.namespaces[network].path: the network namespace the caller made (podman does). */
  netnsPath?: string;
  /** process.rlimits, set by runc in the guest. */
  rlimits?: Rlimit[];
  /** linux.resources the guest applies to the container. */
  resources?: ContainerResources;
  /** config.json's mounts, as written (mounts.ts turns them into what a VM can do). */
  mounts: OciMount[];
}

export function toProcessConfig(p: OciProcess): ProcessConfig {
  return {
    args: p.args,
    env: (p.env ?? []).filter((e) => /^[^=]+=/.test(e)),
    cwd: p.cwd?.startsWith("/") ? p.cwd : "/",
    terminal: p.terminal ?? false,
    user: { uid: p.user?.uid ?? 0, gid: p.user?.gid ?? 0 },
    ...(p.consoleSize ? { rows: p.consoleSize.height || 24, cols: p.consoleSize.width || 80 } : {}),
  };
}

function invalid(what: string, err: unknown): CocoonError {
  const msg =
    err instanceof z.ZodError
      ? err.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")
      : String(err);
  return new CocoonError("ERR_INVALID_CONFIG", `${what}: ${msg}`);
}

/** Reads and checks the bundle's config.json. */
export async function readBundleSpec(bundle: string): Promise<BundleSpec> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path.join(bundle, "config.json"), "utf8"));
  } catch (err) {
    throw invalid(`cannot read ${bundle}/config.json`, (err as Error).message);
  }
  const parsed = specSchema.safeParse(raw);
  if (!parsed.success) throw invalid("invalid OCI spec", parsed.error);
  const s = parsed.data;
  const root = s.root?.path ?? "rootfs";
  const netns = s.linux?.namespaces?.find((n) => n.type === "network")?.path;
  const resources = guestResources(s.linux?.resources);
  return {
    process: toProcessConfig(s.process),
    rootPath: path.resolve(bundle, root),
    readonly: s.root?.readonly ?? false,
    ...(s.hostname ? { hostname: s.hostname } : {}),
    annotations: s.annotations ?? {},
    ...(netns ? { netnsPath: netns } : {}),
    ...(s.process.rlimits ? { rlimits: s.process.rlimits } : {}),
    ...(resources ? { resources } : {}),
    mounts: s.mounts ?? [],
  };
}

/** An OCI Process given as JSON text (an exec's `--process` file, the shim's Exec spec). */
export function parseProcessJson(text: string): ProcessConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw invalid("exec spec is not JSON", (err as Error).message);
  }
  const parsed = ociProcessSchema.safeParse(raw);
  if (!parsed.success) throw invalid("invalid exec process spec", parsed.error);
  return toProcessConfig(parsed.data);
}
