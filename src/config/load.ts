import { readFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseToml, TomlError } from "smol-toml";
import type { z } from "zod";
import { ConfigError, errnoCode, messageOf } from "../errors.js";
import { rootsFromBase, type RuntimeRoots } from "../store/paths.js";
import { defaultConfig } from "./defaults.js";
import { configFileSchema, type CocoonConfig } from "./schema.js";

export const SYSTEM_CONFIG_PATH = "/etc/cocoon/config.toml";

/** Where a value came from: "default", "file:<path>", "env:<NAME>", "flag:<--name>" or "derived". */
export type ValueSource = string;

export interface LoadedConfig {
  config: CocoonConfig;
  /** Dotted key (e.g. "hypervisor.qemu.default_memory") → where its value came from. */
  sources: Record<string, ValueSource>;
  /** The file that was read, if any. */
  file?: string;
  roots: RuntimeRoots;
}

export interface LoadOptions {
  /** `--config`. */
  configPath?: string;
  /** `--root`. */
  root?: string;
  /** `--log-level`. */
  logLevel?: string;
  env?: NodeJS.ProcessEnv;
  /** The system-wide file looked at last (injectable for tests). */
  systemPath?: string;
}

type Leaf = unknown;

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function flatten(obj: Record<string, unknown>, prefix = ""): [string, Leaf][] {
  const out: [string, Leaf][] = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isTable(v)) out.push(...flatten(v, key));
    else out.push([key, v]);
  }
  return out;
}

function setPath(obj: Record<string, unknown>, dotted: string, value: unknown): void {
  const parts = dotted.split(".");
  let cur: Record<string, unknown> = obj;
  for (const part of parts.slice(0, -1)) {
    const next = cur[part];
    if (!isTable(next)) throw new Error(`no table ${part} in ${dotted}`);
    cur = next;
  }
  cur[parts[parts.length - 1]!] = value;
}

function describeIssue(issue: z.core.$ZodIssue, file: string): string {
  const where = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys.map((k) => (where ? `${where}.${k}` : k));
    return `unknown key${keys.length > 1 ? "s" : ""} ${keys.join(", ")} in ${file}`;
  }
  return `invalid value for ${where || "<root>"} in ${file}: ${issue.message}`;
}

/** Parses and validates config file text; errors name the key (or line) and the file. */
export function parseConfigText(text: string, file: string): z.infer<typeof configFileSchema> {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (err) {
    const where = err instanceof TomlError ? ` at line ${err.line}, column ${err.column}` : "";
    throw new ConfigError(
      "ERR_CONFIG_FILE",
      `cannot parse ${file}${where}: ${messageOf(err).split("\n")[0]}`,
      {
        cause: err,
        details: { file },
      },
    );
  }
  const parsed = configFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError("ERR_INVALID_CONFIG", describeIssue(issue, file), {
      details: { file, key: issue.path.map(String).join(".") },
    });
  }
  return parsed.data;
}

async function readConfigFile(file: string, mustExist: boolean): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if (!mustExist && errnoCode(err) === "ENOENT") return undefined;
    throw new ConfigError("ERR_CONFIG_FILE", `cannot read configuration file ${file}: ${messageOf(err)}`, {
      cause: err,
      details: { file },
    });
  }
}

/**
 * Builds the effective configuration. Files: `--config`, else COCOON_CONFIG, else
 * /etc/cocoon/config.toml if it exists, else none. Then environment (COCOON_ROOT,
 * COCOON_ASSETS, COCOON_LOG_LEVEL) and flags (--root, --log-level) override, in that order.
 */
export async function loadConfig(options: LoadOptions = {}): Promise<LoadedConfig> {
  const env = options.env ?? process.env;
  const config = defaultConfig() as unknown as Record<string, unknown>;
  const sources: Record<string, ValueSource> = {};
  for (const [key] of flatten(config)) sources[key] = "default";

  let file: string | undefined;
  let text: string | undefined;
  if (options.configPath) {
    file = path.resolve(options.configPath);
    text = await readConfigFile(file, true);
  } else if (env.COCOON_CONFIG) {
    file = path.resolve(env.COCOON_CONFIG);
    text = await readConfigFile(file, true);
  } else {
    const system = options.systemPath ?? SYSTEM_CONFIG_PATH;
    text = await readConfigFile(system, false);
    if (text !== undefined) file = system;
  }
  if (file && text !== undefined) {
    const parsed = parseConfigText(text, file) as Record<string, unknown>;
    for (const [key, value] of flatten(parsed)) {
      setPath(config, key, value);
      sources[key] = `file:${file}`;
    }
  }

  const set = (key: string, value: unknown, source: ValueSource): void => {
    setPath(config, key, value);
    sources[key] = source;
  };
  const applyRoot = (base: string, source: ValueSource): void => {
    const roots = rootsFromBase(base);
    set("runtime.state_root", roots.stateRoot, source);
    set("runtime.lib_root", roots.libRoot, source);
  };
  if (env.COCOON_ROOT) applyRoot(env.COCOON_ROOT, "env:COCOON_ROOT");
  if (env.COCOON_ASSETS) set("runtime.assets_dir", path.resolve(env.COCOON_ASSETS), "env:COCOON_ASSETS");
  if (env.COCOON_LOG_LEVEL) set("runtime.log_level", env.COCOON_LOG_LEVEL, "env:COCOON_LOG_LEVEL");
  if (options.root) applyRoot(options.root, "flag:--root");
  if (options.logLevel) set("runtime.log_level", options.logLevel, "flag:--log-level");

  // Environment and flags bypass the file schema: validate the merged result once more.
  const checked = configFileSchema.safeParse(config);
  if (!checked.success) {
    const issue = checked.error.issues[0]!;
    const key = issue.path.map(String).join(".");
    throw new ConfigError(
      "ERR_INVALID_CONFIG",
      `invalid value for ${key} (from ${sources[key] ?? "?"}): ${issue.message}`,
      {
        details: { key },
      },
    );
  }
  const effective = config as unknown as CocoonConfig;
  if (effective.runtime.assets_dir === "") {
    effective.runtime.assets_dir = path.join(effective.runtime.lib_root, "assets");
    sources["runtime.assets_dir"] = "derived";
  }
  return {
    config: effective,
    sources,
    ...(file ? { file } : {}),
    roots: {
      stateRoot: effective.runtime.state_root,
      libRoot: effective.runtime.lib_root,
      assetsDir: effective.runtime.assets_dir,
    },
  };
}

/** Rows of `cocoon config show`: every key, its value and where it came from. */
export function describeConfig(loaded: LoadedConfig): { key: string; value: unknown; source: ValueSource }[] {
  return flatten(loaded.config as unknown as Record<string, unknown>).map(([key, value]) => ({
    key,
    value,
    source: loaded.sources[key] ?? "default",
  }));
}
