import { HypervisorError } from "../../errors.js";

/** A Firecracker (or jailer) release, e.g. 1.16.1 from "1.16.1" or "1.0.0-44-gc73a27cb-dirty". */
export interface FcVersion {
  major: number;
  minor: number;
  patch: number;
  /** The string the binary reported, kept for messages. */
  raw: string;
}

const VERSION_RE = /(\d+)\.(\d+)\.(\d+)/;

/** Parses the first x.y.z in `text`; undefined when there is none. */
export function tryParseVersion(text: string): FcVersion | undefined {
  const m = VERSION_RE.exec(text);
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), raw: text.trim() };
}

export function parseVersion(text: string, what = "Firecracker"): FcVersion {
  const v = tryParseVersion(text);
  if (!v) {
    throw new HypervisorError(
      "ERR_VMM_API",
      `cannot read a ${what} version in "${text.trim().slice(0, 200)}"`,
      {
        details: { text: text.slice(0, 200) },
      },
    );
  }
  return v;
}

/** Negative when a < b, zero when equal (pre-release suffixes are ignored), positive otherwise. */
export function compareVersions(a: FcVersion | string, b: FcVersion | string): number {
  const va = typeof a === "string" ? parseVersion(a) : a;
  const vb = typeof b === "string" ? parseVersion(b) : b;
  return va.major - vb.major || va.minor - vb.minor || va.patch - vb.patch;
}

/** True when `v` is at least `min` ("1.7.0"). */
export function atLeast(v: FcVersion, min: string): boolean {
  return compareVersions(v, min) >= 0;
}

export function formatVersion(v: FcVersion): string {
  return `${v.major}.${v.minor}.${v.patch}`;
}

/** The oldest Firecracker the SDK drives: 1.0 is the first release with GET /version and the 1.x API. */
export const MIN_SUPPORTED_VERSION = "1.0.0";
