import path from "node:path";
import { HypervisorError } from "../../errors.js";
import { describeExit, runCommand } from "../../host/process.js";
import { ACRN_GVTG_SLOT, ACRN_PCI_SLOTS, ACRN_PLACEHOLDER_DISK } from "./argv.js";

/**
 * `acrnctl`, ACRN's VM manager CLI. cocoon only needs `blkrescan`: it asks a running acrn-dm
 * to give a placeholder virtio-blk device ("nodisk") a real backing file, which is how ACRN
 * does block "hotplug". acrn-dm accepts this once per placeholder: it refuses to replace a
 * backing file that is already live.
 */

export interface BlkrescanRequest {
  /** The VM name acrn-dm was started with. */
  vmName: string;
  /** PCI slot of the placeholder virtio-blk device. */
  slot: number;
  /** The new backing file or block device. */
  file: string;
  readOnly?: boolean;
}

function invalid(message: string, details: Record<string, unknown>): HypervisorError {
  return new HypervisorError("ERR_INVALID_ARGUMENT", message, { details });
}

/** The arguments of `acrnctl blkrescan <vm> <slot>,<file>[,ro]`, after validating them. */
export function blkrescanArgs(req: BlkrescanRequest): string[] {
  if (req.vmName === "" || /\s/.test(req.vmName)) {
    throw invalid(`invalid ACRN VM name "${req.vmName}"`, { vmName: req.vmName });
  }
  if (
    !Number.isInteger(req.slot) ||
    req.slot < 0 ||
    req.slot >= ACRN_PCI_SLOTS ||
    req.slot === ACRN_GVTG_SLOT
  ) {
    throw invalid(`invalid PCI slot ${req.slot} for blkrescan`, { slot: req.slot });
  }
  if (req.file === "") throw invalid("blkrescan needs a backing file: the path is empty", { slot: req.slot });
  if (!path.isAbsolute(req.file))
    throw invalid(`blkrescan needs an absolute path, got "${req.file}"`, { file: req.file });
  // acrn-dm splits the argument on the first ',' and treats what follows the path as options.
  if (req.file.includes(","))
    throw invalid(`a blkrescan path cannot contain ',': ${req.file}`, { file: req.file });
  // acrn-dm refuses any path containing the placeholder's name.
  if (req.file.includes(ACRN_PLACEHOLDER_DISK)) {
    throw invalid(`acrn-dm refuses blkrescan paths containing "${ACRN_PLACEHOLDER_DISK}": ${req.file}`, {
      file: req.file,
    });
  }
  return ["blkrescan", req.vmName, `${req.slot},${req.file}${req.readOnly ? ",ro" : ""}`];
}

export interface AcrnctlOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Runs `acrnctl blkrescan`; a refusal is an ERR_VMM_API error carrying acrnctl's message. */
export async function blkrescan(
  ctlPath: string,
  req: BlkrescanRequest,
  options: AcrnctlOptions = {},
): Promise<void> {
  const args = blkrescanArgs(req);
  const result = await runCommand(ctlPath, args, {
    env: options.env,
    timeoutMs: options.timeoutMs ?? 30_000,
  });
  if (result.timedOut || result.code !== 0) {
    const why = result.timedOut ? "timed out" : describeExit(result);
    const said = (result.stderr.trim() || result.stdout.trim()).split("\n").slice(-3).join("; ");
    throw new HypervisorError(
      "ERR_VMM_API",
      `acrnctl blkrescan ${req.vmName} slot ${req.slot} ${why}${said ? `: ${said}` : ""}`,
      { details: { ctlPath, args, code: result.code, signal: result.signal } },
    );
  }
}
