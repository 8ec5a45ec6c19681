import { access, constants } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { HostError } from "../errors.js";
import { runCommand } from "../host/process.js";

/**
 * A CNI invoker (the CNI SPEC's "network configuration list" execution), small enough to read:
 * each plugin of the list runs in order with CNI_COMMAND=ADD and its config on stdin; after the
 * first, the config carries `prevResult`. DEL runs the plugins in reverse with the saved
 * result; CHECK in order with it. Capabilities the list declares are filled from runtimeConfig.
 */

/** Where the plugins are; COCOON_CNI_PATH overrides it (a test points it at an empty directory). */
export const DEFAULT_CNI_PATH = process.env.COCOON_CNI_PATH ?? "/usr/lib/cni";

const pluginSchema = z
  .object({
    type: z.string().regex(/^[A-Za-z0-9_.-]+$/),
    capabilities: z.record(z.string(), z.boolean()).optional(),
  })
  .passthrough();
export const conflistSchema = z.object({
  cniVersion: z.string(),
  name: z.string().min(1),
  plugins: z.array(pluginSchema).min(1),
});
export type Conflist = z.infer<typeof conflistSchema>;

export const cniResultSchema = z
  .object({
    cniVersion: z.string(),
    interfaces: z
      .array(
        z
          .object({ name: z.string(), mac: z.string().optional(), sandbox: z.string().optional() })
          .passthrough(),
      )
      .default([]),
    ips: z
      .array(
        z
          .object({ address: z.string(), gateway: z.string().optional(), interface: z.number().optional() })
          .passthrough(),
      )
      .default([]),
    routes: z.array(z.object({ dst: z.string(), gw: z.string().optional() }).passthrough()).default([]),
    dns: z
      .object({ nameservers: z.array(z.string()).optional() })
      .passthrough()
      .optional(),
  })
  .passthrough();
export type CniResult = z.infer<typeof cniResultSchema>;

const cniErrorSchema = z
  .object({ code: z.number(), msg: z.string(), details: z.string().optional() })
  .passthrough();

export interface CniRuntime {
  containerId: string;
  /** The namespace path; "" when it is gone (DEL must still release what it can). */
  netns: string;
  ifName: string;
  /** `{portMappings: [...]}` and the like, handed to plugins that declare the capability. */
  runtimeConfig?: Record<string, unknown>;
  cniPath?: string;
}

/** Every plugin of the list exists and is executable, before anything runs (one clear error). */
export async function checkPlugins(list: Conflist, cniPath = DEFAULT_CNI_PATH): Promise<void> {
  for (const p of list.plugins) {
    const file = path.join(cniPath, p.type);
    const ok = await access(file, constants.X_OK).then(
      () => true,
      () => false,
    );
    if (!ok) {
      throw new HostError("ERR_HOST_MISSING_TOOL", `the CNI plugin "${p.type}" is not installed (${file})`, {
        hint: "install the CNI plugins: apt-get install containernetworking-plugins",
        details: { plugin: p.type, cniPath },
      });
    }
  }
}

function pluginConfig(list: Conflist, i: number, rt: CniRuntime, prevResult: CniResult | undefined): string {
  const { capabilities, ...plugin } = list.plugins[i]!;
  const runtimeConfig: Record<string, unknown> = {};
  for (const [cap, on] of Object.entries(capabilities ?? {}))
    if (on && rt.runtimeConfig?.[cap] !== undefined) runtimeConfig[cap] = rt.runtimeConfig[cap];
  return JSON.stringify({
    ...plugin,
    cniVersion: list.cniVersion,
    name: list.name,
    ...(Object.keys(runtimeConfig).length ? { runtimeConfig } : {}),
    ...(prevResult ? { prevResult } : {}),
  });
}

async function invoke(
  command: "ADD" | "DEL" | "CHECK",
  list: Conflist,
  i: number,
  rt: CniRuntime,
  prevResult: CniResult | undefined,
): Promise<CniResult | undefined> {
  const cniPath = rt.cniPath ?? DEFAULT_CNI_PATH;
  const type = list.plugins[i]!.type;
  const res = await runCommand(path.join(cniPath, type), [], {
    input: pluginConfig(list, i, rt, prevResult),
    timeoutMs: 60_000,
    env: {
      PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
      CNI_COMMAND: command,
      CNI_CONTAINERID: rt.containerId,
      CNI_NETNS: rt.netns,
      CNI_IFNAME: rt.ifName,
      CNI_PATH: cniPath,
    },
  });
  if (res.code !== 0 || res.timedOut) {
    // Plugins report errors as JSON on stdout ({code, msg, details}).
    let why = res.stderr.trim() || res.stdout.trim();
    try {
      const e = cniErrorSchema.parse(JSON.parse(res.stdout));
      why = e.details ? `${e.msg}: ${e.details}` : e.msg;
    } catch {
      /* not JSON: keep the raw text */
    }
    throw new HostError(
      "ERR_PROCESS",
      `CNI ${command} failed in plugin ${type}: ${why || `exit ${res.code}`}`,
      {
        details: { plugin: type, command, code: res.code },
      },
    );
  }
  if (command !== "ADD") return undefined;
  return cniResultSchema.parse(JSON.parse(res.stdout));
}

/**
 * ADD. On a failure part-way, the plugins that already ran are deleted again (in reverse), so
 * nothing is half made. `onProgress` sees each intermediate result, for a caller that persists it.
 */
export async function cniAdd(
  list: Conflist,
  rt: CniRuntime,
  onProgress?: (result: CniResult) => Promise<void>,
): Promise<CniResult> {
  let result: CniResult | undefined;
  for (let i = 0; i < list.plugins.length; i++) {
    try {
      result = await invoke("ADD", list, i, rt, result);
    } catch (err) {
      await cniDel(list, rt, result).catch(() => undefined);
      throw err;
    }
    await onProgress?.(result!);
  }
  return result!;
}

/** DEL, in reverse order; every plugin runs even when one fails (the first error is thrown after). */
export async function cniDel(list: Conflist, rt: CniRuntime, prevResult?: CniResult): Promise<void> {
  let first: unknown;
  for (let i = list.plugins.length - 1; i >= 0; i--) {
    try {
      await invoke("DEL", list, i, rt, prevResult);
    } catch (err) {
      first ??= err;
    }
  }
  if (first) throw first;
}

/** CHECK, in order, with the saved result. */
export async function cniCheck(list: Conflist, rt: CniRuntime, prevResult: CniResult): Promise<void> {
  for (let i = 0; i < list.plugins.length; i++) await invoke("CHECK", list, i, rt, prevResult);
}
