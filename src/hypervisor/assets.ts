import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import picomatch from "picomatch";
import { ConfigError, errnoCode, messageOf } from "../errors.js";

/** The files a sandbox boots from. Binaries (hypervisor, ctl, jailer) are assets too. */
export const ASSET_TYPES = [
  "kernel",
  "image",
  "initrd",
  "hypervisor",
  "hypervisorCtl",
  "jailer",
  "firmware",
] as const;
export type AssetType = (typeof ASSET_TYPES)[number];

/** Asset types whose override would make cocoon execute a different program. */
export const BINARY_ASSET_TYPES: readonly AssetType[] = ["hypervisor", "hypervisorCtl", "jailer"];

export const ANNOTATION_PREFIX = "io.cocoon.config.hypervisor.";
export const ASSET_HASH_TYPE_ANNOTATION = "io.cocoon.config.asset_hash_type";

/** Annotation names (after the prefix) for each asset's path and hash. */
export const ASSET_ANNOTATIONS: Record<AssetType, { path: string; hash: string }> = {
  kernel: { path: "kernel", hash: "kernel_hash" },
  image: { path: "image", hash: "image_hash" },
  initrd: { path: "initrd", hash: "initrd_hash" },
  hypervisor: { path: "path", hash: "hypervisor_hash" },
  hypervisorCtl: { path: "ctlpath", hash: "hypervisorctl_hash" },
  jailer: { path: "jailer_path", hash: "jailer_hash" },
  firmware: { path: "firmware", hash: "firmware_hash" },
};

/** A file override: an absolute path and, optionally, the SHA-512 it must have. */
export interface Asset {
  type: AssetType;
  path: string;
  /** Lower-case hex SHA-512, when the override pins the content. */
  hash?: string;
}

/**
 * What annotations may do. Overrides are a privilege-escalation door (a sandbox could make
 * cocoon run any binary), so nothing is enabled by default, as in Kata.
 */
export interface AnnotationPolicy {
  /** Regexps matched against the whole annotation name after the prefix (e.g. "kernel"). */
  enableAnnotations: string[];
  /** glob(3) allow-lists for annotations that name binaries or devices; empty rejects all. */
  validHypervisorPaths: string[];
  validCtlPaths: string[];
  validJailerPaths: string[];
}

export const DEFAULT_ANNOTATION_POLICY: AnnotationPolicy = {
  enableAnnotations: ["kernel_params"],
  validHypervisorPaths: [],
  validCtlPaths: [],
  validJailerPaths: [],
};

/** Asset types whose override value must also be in an allow-list, and the list's config key. */
const RESTRICTED: Partial<Record<AssetType, { list: keyof AnnotationPolicy; configKey: string }>> = {
  hypervisor: { list: "validHypervisorPaths", configKey: "valid_hypervisor_paths" },
  hypervisorCtl: { list: "validCtlPaths", configKey: "valid_ctlpaths" },
  jailer: { list: "validJailerPaths", configKey: "valid_jailer_paths" },
};

function forbidden(message: string, details: Record<string, unknown>): ConfigError {
  return new ConfigError("ERR_ANNOTATION_FORBIDDEN", message, { details });
}

/** Every `io.cocoon.config.hypervisor.*` annotation must be enabled by a policy regexp. */
export function checkAnnotationsEnabled(annotations: Record<string, string>, policy: AnnotationPolicy): void {
  const patterns = policy.enableAnnotations.map((re) => {
    try {
      return new RegExp(`^(?:${re})$`);
    } catch (err) {
      throw new ConfigError(
        "ERR_INVALID_CONFIG",
        `enable_annotations has an invalid regexp "${re}": ${messageOf(err)}`,
      );
    }
  });
  for (const key of Object.keys(annotations)) {
    if (!key.startsWith(ANNOTATION_PREFIX)) continue;
    const name = key.slice(ANNOTATION_PREFIX.length);
    if (!patterns.some((re) => re.test(name))) {
      throw forbidden(
        `annotation ${key} is not enabled (allow it with enable_annotations in the configuration)`,
        {
          annotation: key,
        },
      );
    }
  }
}

/** Reads the asset overrides out of annotations, applying the policy. Does not touch files. */
export function assetsFromAnnotations(
  annotations: Record<string, string>,
  policy: AnnotationPolicy = DEFAULT_ANNOTATION_POLICY,
): Partial<Record<AssetType, Asset>> {
  checkAnnotationsEnabled(annotations, policy);
  const hashType = annotations[ASSET_HASH_TYPE_ANNOTATION];
  if (hashType !== undefined && hashType !== "" && hashType !== "sha512") {
    throw new ConfigError(
      "ERR_INVALID_CONFIG",
      `unsupported asset hash type "${hashType}": only sha512 is supported`,
    );
  }
  const out: Partial<Record<AssetType, Asset>> = {};
  for (const type of ASSET_TYPES) {
    const names = ASSET_ANNOTATIONS[type];
    const p = annotations[ANNOTATION_PREFIX + names.path];
    if (p === undefined || p === "") continue;
    if (!path.isAbsolute(p)) {
      throw new ConfigError("ERR_ASSET_INVALID", `invalid ${type} asset at ${p}: the path must be absolute`, {
        details: { type, path: p },
      });
    }
    const restricted = RESTRICTED[type];
    if (restricted) {
      const globs = policy[restricted.list] as string[];
      if (!globs.some((g) => picomatch.isMatch(p, g, { dot: true }))) {
        throw forbidden(
          `${type} path ${p} from annotation ${ANNOTATION_PREFIX + names.path} is not in ${restricted.configKey}`,
          { type, path: p, allowList: globs },
        );
      }
    }
    const hash = annotations[ANNOTATION_PREFIX + names.hash];
    out[type] = hash ? { type, path: p, hash: hash.toLowerCase() } : { type, path: p };
  }
  if (out.image && out.initrd) {
    throw new ConfigError(
      "ERR_INVALID_CONFIG",
      "conflicting annotations: image and initrd cannot both be overridden",
    );
  }
  return out;
}

/** SHA-512 of a file, streamed. */
export async function sha512File(file: string): Promise<string> {
  const hash = createHash("sha512");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/**
 * Checks that an asset exists, is a non-empty regular file and, when a hash is given, that
 * its content matches. Errors name the asset type and path.
 */
export async function verifyAsset(asset: Asset): Promise<void> {
  const { type, path: file } = asset;
  if (!path.isAbsolute(file)) {
    throw new ConfigError(
      "ERR_ASSET_INVALID",
      `invalid ${type} asset at ${file}: the path must be absolute`,
      {
        details: { type, path: file },
      },
    );
  }
  let size: number;
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new Error("not a regular file");
    size = st.size;
  } catch (err) {
    const why = errnoCode(err) === "ENOENT" ? "no such file" : messageOf(err);
    throw new ConfigError("ERR_ASSET_INVALID", `invalid ${type} asset at ${file}: ${why}`, {
      details: { type, path: file },
      cause: err,
    });
  }
  if (asset.hash === undefined) return;
  if (size === 0) {
    throw new ConfigError("ERR_ASSET_INVALID", `invalid ${type} asset at ${file}: the file is empty`, {
      details: { type, path: file },
    });
  }
  const actual = await sha512File(file);
  if (actual !== asset.hash) {
    throw new ConfigError(
      "ERR_ASSET_HASH_MISMATCH",
      `invalid hash for ${type} asset ${file}: computed ${actual}, expected ${asset.hash}`,
      { details: { type, path: file, computed: actual, expected: asset.hash } },
    );
  }
}
