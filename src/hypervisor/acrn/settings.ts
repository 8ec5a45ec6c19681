import { HypervisorError } from "../../errors.js";
import type { Param } from "../params.js";

/**
 * ACRN-only driver settings. HypervisorConfig has no ACRN fields, so the config loader hands
 * them to the driver as `hypervisorParams` entries (`max_vms=<n>`,
 * `platform_info_helper=<path>`). ACRN has no other use for hypervisor parameters (acrn-dm
 * gets no free-form arguments), so any other key is refused rather than silently ignored.
 */
export interface AcrnSettings {
  /** The platform's VM limit; 0 asks the hypervisor through the platform-info helper. */
  maxVms: number;
  /** The platform-info helper; "" means the one the build script puts in .cache/acrn/. */
  platformInfoHelper: string;
}

export const DEFAULT_ACRN_SETTINGS: AcrnSettings = { maxVms: 0, platformInfoHelper: "" };

const KEYS = { maxVms: "max_vms", platformInfoHelper: "platform_info_helper" } as const;

function invalid(message: string, key: string): HypervisorError {
  return new HypervisorError("ERR_INVALID_CONFIG", message, { details: { field: `hypervisor.acrn.${key}` } });
}

/** The settings as hypervisorParams (what the config loader produces). Defaults are omitted. */
export function acrnSettingsToParams(settings: AcrnSettings): Param[] {
  const out: Param[] = [];
  if (settings.maxVms !== 0) out.push({ key: KEYS.maxVms, value: String(settings.maxVms) });
  if (settings.platformInfoHelper !== "")
    out.push({ key: KEYS.platformInfoHelper, value: settings.platformInfoHelper });
  return out;
}

/** Reads the settings back, validating each value. */
export function acrnSettingsFromParams(params: readonly Param[]): AcrnSettings {
  const settings: AcrnSettings = { ...DEFAULT_ACRN_SETTINGS };
  for (const { key, value } of params) {
    if (key === KEYS.maxVms) {
      if (!/^\d{1,6}$/.test(value))
        throw invalid(`max_vms must be a non-negative integer, got "${value}"`, key);
      settings.maxVms = Number(value);
    } else if (key === KEYS.platformInfoHelper) {
      if (!value.startsWith("/"))
        throw invalid(`platform_info_helper must be an absolute path, got "${value}"`, key);
      settings.platformInfoHelper = value;
    } else {
      throw invalid(
        `ACRN takes no hypervisor parameter "${key}${value ? `=${value}` : ""}" (known: ${Object.values(KEYS).join(", ")})`,
        key || value,
      );
    }
  }
  return settings;
}
