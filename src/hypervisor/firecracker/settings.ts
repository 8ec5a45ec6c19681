import { HypervisorError } from "../../errors.js";
import type { JailStrategy } from "../../vmm/firecracker/jail.js";
import type { Param } from "../params.js";

/**
 * Firecracker-only driver settings. HypervisorConfig has no field for them, so the config loader
 * hands them over as `hypervisorParams` entries (`jailer_uid=…`, `jailer_gid=…`,
 * `jailer_cgroup_version=…`, `jail_resources=…`). Firecracker takes no free-form arguments, so
 * any other key is refused rather than silently ignored.
 */
export interface FirecrackerSettings {
  /** uid/gid the jailer drops to before exec'ing Firecracker. */
  jailerUid: number;
  jailerGid: number;
  jailerCgroupVersion: 1 | 2;
  /** How files enter the jail: hard link where possible else bind mount (auto), or always one way. */
  jailResources: JailStrategy;
  /** A balloon device at boot: the only way Firecracker 1.x can take memory back from a running guest. */
  balloon: boolean;
}

export const DEFAULT_FIRECRACKER_SETTINGS: FirecrackerSettings = {
  jailerUid: 0,
  jailerGid: 0,
  jailerCgroupVersion: 2,
  jailResources: "auto",
  balloon: false,
};

const KEYS = {
  jailerUid: "jailer_uid",
  jailerGid: "jailer_gid",
  jailerCgroupVersion: "jailer_cgroup_version",
  jailResources: "jail_resources",
  balloon: "balloon",
} as const;

const STRATEGIES: readonly JailStrategy[] = ["auto", "bind", "link", "copy"];

function invalid(message: string, key: string): HypervisorError {
  return new HypervisorError("ERR_INVALID_CONFIG", message, {
    details: { field: `hypervisor.firecracker.${key}` },
  });
}

/** The settings as hypervisorParams (what the config loader produces). Defaults are omitted. */
export function firecrackerSettingsToParams(s: FirecrackerSettings): Param[] {
  const out: Param[] = [];
  const d = DEFAULT_FIRECRACKER_SETTINGS;
  if (s.jailerUid !== d.jailerUid) out.push({ key: KEYS.jailerUid, value: String(s.jailerUid) });
  if (s.jailerGid !== d.jailerGid) out.push({ key: KEYS.jailerGid, value: String(s.jailerGid) });
  if (s.jailerCgroupVersion !== d.jailerCgroupVersion)
    out.push({ key: KEYS.jailerCgroupVersion, value: String(s.jailerCgroupVersion) });
  if (s.jailResources !== d.jailResources) out.push({ key: KEYS.jailResources, value: s.jailResources });
  if (s.balloon !== d.balloon) out.push({ key: KEYS.balloon, value: String(s.balloon) });
  return out;
}

function id32(key: string, value: string): number {
  if (!/^\d{1,10}$/.test(value) || Number(value) > 0xffffffff)
    throw invalid(`${key} must be a 32-bit unsigned integer, got "${value}"`, key);
  return Number(value);
}

/** Reads the settings back, validating each value. */
export function firecrackerSettingsFromParams(params: readonly Param[]): FirecrackerSettings {
  const s: FirecrackerSettings = { ...DEFAULT_FIRECRACKER_SETTINGS };
  for (const { key, value } of params) {
    if (key === KEYS.jailerUid) s.jailerUid = id32(key, value);
    else if (key === KEYS.jailerGid) s.jailerGid = id32(key, value);
    else if (key === KEYS.jailerCgroupVersion) {
      if (value !== "1" && value !== "2")
        throw invalid(`jailer_cgroup_version must be 1 or 2, got "${value}"`, key);
      s.jailerCgroupVersion = value === "1" ? 1 : 2;
    } else if (key === KEYS.jailResources) {
      if (!(STRATEGIES as readonly string[]).includes(value))
        throw invalid(`jail_resources must be one of ${STRATEGIES.join(", ")}, got "${value}"`, key);
      s.jailResources = value as JailStrategy;
    } else if (key === KEYS.balloon) {
      if (value !== "true" && value !== "false")
        throw invalid(`balloon must be true or false, got "${value}"`, key);
      s.balloon = value === "true";
    } else {
      throw invalid(
        `Firecracker takes no hypervisor parameter "${key}${value ? `=${value}` : ""}" (known: ${Object.values(KEYS).join(", ")})`,
        key || value,
      );
    }
  }
  return s;
}
