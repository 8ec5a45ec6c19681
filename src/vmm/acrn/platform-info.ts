import { packagePath } from "../../package-root.js";
import { HypervisorError, isCocoonError } from "../../errors.js";
import { runCommand } from "../../host/process.js";

/**
 * ACRN's platform information, as the VHM driver (/dev/acrn_vhm) reports it through its
 * IC_GET_PLATFORM_INFO ioctl. cocoon needs one field of it: how many Kata-style VMs the
 * hypervisor was built to run. Node cannot issue an ioctl, so a tiny C helper
 * (platform-info.c) does the call and prints the raw structure as hex; the decoding is here.
 */

export const ACRN_VHM_DEVICE = "/dev/acrn_vhm";

/** The size of the VHM ABI's `struct platform_info`. */
export const ACRN_PLATFORM_INFO_SIZE = 256;

/**
 * Field offsets in `struct platform_info` (x86_64, little endian): the hardware part fills
 * the first 128 bytes, the configuration part starts at 128.
 */
export const PLATFORM_INFO_LAYOUT = {
  cpuNum: 0, // u16: physical CPUs
  version: 2, // u16: structure version (0 before ACRN added the field)
  maxVcpusPerVm: 128, // u16
  maxKataContainers: 130, // u8: VMs reserved for Kata-style post-launched guests
  maxVms: 138, // u16: all configured VMs
  vmConfigEntrySize: 140, // u32
} as const;

export interface AcrnPlatformInfo {
  cpuNum: number;
  version: number;
  maxVcpusPerVm: number;
  maxKataContainers: number;
  maxVms: number;
  vmConfigEntrySize: number;
}

function probeError(
  message: string,
  options: { hint?: string; details?: Record<string, unknown> } = {},
): HypervisorError {
  return new HypervisorError("ERR_HOST_PROBE", message, options);
}

/** Decodes the raw structure. */
export function parsePlatformInfo(raw: Buffer): AcrnPlatformInfo {
  if (raw.length !== ACRN_PLATFORM_INFO_SIZE) {
    throw probeError(`ACRN platform info has ${raw.length} bytes, expected ${ACRN_PLATFORM_INFO_SIZE}`);
  }
  const L = PLATFORM_INFO_LAYOUT;
  return {
    cpuNum: raw.readUInt16LE(L.cpuNum),
    version: raw.readUInt16LE(L.version),
    maxVcpusPerVm: raw.readUInt16LE(L.maxVcpusPerVm),
    maxKataContainers: raw.readUInt8(L.maxKataContainers),
    maxVms: raw.readUInt16LE(L.maxVms),
    vmConfigEntrySize: raw.readUInt32LE(L.vmConfigEntrySize),
  };
}

/** Decodes the helper's output: the structure as one line of lower-case hex. */
export function parsePlatformInfoHex(text: string): AcrnPlatformInfo {
  const hex = text.trim();
  if (!new RegExp(`^[0-9a-f]{${ACRN_PLATFORM_INFO_SIZE * 2}}$`).test(hex)) {
    throw probeError(
      `the ACRN platform-info helper printed ${hex.length === 0 ? "nothing" : `"${hex.slice(0, 40)}…"`}, not ${ACRN_PLATFORM_INFO_SIZE} bytes of hex`,
    );
  }
  return parsePlatformInfo(Buffer.from(hex, "hex"));
}

/** Where scripts build the helper: <repo>/.cache/acrn/ (same from src/ and dist/). */
export const DEFAULT_PLATFORM_HELPER = packagePath(".cache/acrn/cocoon-acrn-platform-info");

const SETTING_HINT = "or set max_vms in [hypervisor.acrn] to the platform's limit and skip the probe";

export interface ProbeOptions {
  /** The helper program (default: DEFAULT_PLATFORM_HELPER). */
  helperPath?: string;
  /** The VHM device (default /dev/acrn_vhm). */
  device?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Runs the helper and decodes its answer; every failure is a one-line error saying what to do. */
export async function probePlatformInfo(options: ProbeOptions = {}): Promise<AcrnPlatformInfo> {
  const helper = options.helperPath ?? DEFAULT_PLATFORM_HELPER;
  const device = options.device ?? ACRN_VHM_DEVICE;
  let result;
  try {
    result = await runCommand(helper, [device], { env: options.env, timeoutMs: options.timeoutMs ?? 10_000 });
  } catch (err) {
    if (isCocoonError(err) && err.code === "ERR_HOST_MISSING_TOOL") {
      throw new HypervisorError(
        "ERR_HOST_MISSING_TOOL",
        `the ACRN platform-info helper ${helper} is missing`,
        {
          cause: err,
          details: { helper },
          hint: `build it with "bash src/vmm/acrn/build-platform-info.sh", ${SETTING_HINT}`,
        },
      );
    }
    throw err;
  }
  const said = result.stderr.trim().split("\n").pop() ?? "";
  switch (result.timedOut ? "timeout" : result.code) {
    case 0:
      return parsePlatformInfoHex(result.stdout);
    case 2:
      throw probeError(
        `cannot read ACRN's VM limit: ${device} does not exist (this host is not an ACRN service VM)`,
        {
          details: { device },
          hint: `run cocoon in the ACRN service VM, ${SETTING_HINT}`,
        },
      );
    case 3:
      throw probeError(`cannot read ACRN's VM limit: ${said || `cannot open ${device}`}`, {
        details: { device },
        hint: `run cocoon as root, ${SETTING_HINT}`,
      });
    case 4:
      throw probeError(`cannot read ACRN's VM limit: ${said || "the platform-info ioctl failed"}`, {
        details: { device },
        hint: `check that ${device} belongs to ACRN's VHM driver, ${SETTING_HINT}`,
      });
    case "timeout":
      throw probeError(`the ACRN platform-info helper ${helper} did not answer`, { details: { helper } });
    default:
      throw probeError(
        `the ACRN platform-info helper ${helper} failed (${result.signal ?? `exit ${String(result.code)}`})${said ? `: ${said}` : ""}`,
        { details: { helper } },
      );
  }
}
