import { CocoonError } from "../errors.js";
import type { ProcessConfig } from "../sandbox/config.js";
import { parseProcessJson, readBundleSpec as readSpec, type BundleSpec } from "../oci/spec.js";
import { TtrpcError, Code } from "./ttrpc/status.js";

export type { BundleSpec };

/** A bad spec is InvalidArgument for containerd (the parsing is shared with cocoon-runtime). */
function asStatus(err: unknown): unknown {
  return err instanceof CocoonError && err.code === "ERR_INVALID_CONFIG"
    ? new TtrpcError(Code.invalidArgument, err.message)
    : err;
}

/** Reads and checks the bundle's config.json. */
export async function readBundleSpec(bundle: string): Promise<BundleSpec> {
  return readSpec(bundle).catch((err: unknown) => {
    throw asStatus(err);
  });
}

/** Exec's `spec`: an Any holding the OCI Process as JSON (containerd's typeurl for non-proto types). */
export function parseExecSpec(value: Uint8Array | undefined): ProcessConfig {
  if (!value?.length) throw new TtrpcError(Code.invalidArgument, "exec needs a process spec");
  try {
    return parseProcessJson(Buffer.from(value).toString("utf8"));
  } catch (err) {
    throw asStatus(err);
  }
}
