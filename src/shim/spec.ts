import { readFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import type { ProcessConfig } from "../sandbox/config.js";
import { TtrpcError, Code } from "./ttrpc/status.js";

/** The parts of an OCI process the shim passes on (config.json's `process`, Exec's spec). */
const processSchema = z.object({
  terminal: z.boolean().optional(),
  user: z
    .object({ uid: z.number().int().nonnegative(), gid: z.number().int().nonnegative() })
    .partial()
    .optional(),
  args: z.array(z.string()).min(1, "the process has no args"),
  env: z.array(z.string()).optional(),
  cwd: z.string().optional(),
  consoleSize: z.object({ height: z.number(), width: z.number() }).optional(),
});

const specSchema = z.object({
  process: processSchema,
  root: z.object({ path: z.string(), readonly: z.boolean().optional() }).optional(),
  hostname: z.string().optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

export interface BundleSpec {
  process: ProcessConfig;
  rootPath: string;
  readonly: boolean;
  hostname?: string;
  annotations: Record<string, string>;
}

export function toProcessConfig(p: z.infer<typeof processSchema>): ProcessConfig {
  return {
    args: p.args,
    env: (p.env ?? []).filter((e) => /^[^=]+=/.test(e)),
    cwd: p.cwd?.startsWith("/") ? p.cwd : "/",
    terminal: p.terminal ?? false,
    user: { uid: p.user?.uid ?? 0, gid: p.user?.gid ?? 0 },
    ...(p.consoleSize ? { rows: p.consoleSize.height || 24, cols: p.consoleSize.width || 80 } : {}),
  };
}

function invalid(what: string, err: unknown): TtrpcError {
  const msg =
    err instanceof z.ZodError
      ? err.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")
      : String(err);
  return new TtrpcError(Code.invalidArgument, `${what}: ${msg}`);
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
  return {
    process: toProcessConfig(s.process),
    rootPath: path.resolve(bundle, root),
    readonly: s.root?.readonly ?? false,
    ...(s.hostname ? { hostname: s.hostname } : {}),
    annotations: s.annotations ?? {},
  };
}

/** Exec's `spec`: an Any holding the OCI Process as JSON (containerd's typeurl for non-proto types). */
export function parseExecSpec(value: Uint8Array | undefined): ProcessConfig {
  if (!value?.length) throw new TtrpcError(Code.invalidArgument, "exec needs a process spec");
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(value).toString("utf8"));
  } catch (err) {
    throw invalid("exec spec is not JSON", (err as Error).message);
  }
  const parsed = processSchema.safeParse(raw);
  if (!parsed.success) throw invalid("invalid exec process spec", parsed.error);
  return toProcessConfig(parsed.data);
}
