import { ConfigError } from "../errors.js";

/** A key/value pair for kernel or hypervisor parameters. Either side may be empty. */
export interface Param {
  key: string;
  value: string;
}

/** Refuses a parameter with an empty key: the kernel would see a bare "=value". */
export function checkKernelParam(p: Param): Param {
  if (p.key === "") {
    throw new ConfigError(
      "ERR_INVALID_KERNEL_PARAM",
      `kernel parameter has an empty key (value "${p.value}")`,
      {
        details: { value: p.value },
      },
    );
  }
  return p;
}

/** Returns a copy of `params` with `p` appended (after validating its key). */
export function addKernelParam(params: readonly Param[], p: Param): Param[] {
  return [...params, checkKernelParam(p)];
}

/**
 * Turns parameters into strings:
 * - both empty: skipped;
 * - key only or value only: that one string;
 * - an empty delimiter: key and value as two separate strings (for argv-style flags);
 * - otherwise `key<delim>value`.
 */
export function serializeParams(params: readonly Param[], delim: string): string[] {
  const out: string[] = [];
  for (const { key, value } of params) {
    if (key === "" && value === "") continue;
    if (key === "") out.push(value);
    else if (value === "") out.push(key);
    else if (delim === "") out.push(key, value);
    else out.push(`${key}${delim}${value}`);
  }
  return out;
}

/** The inverse for `=`-joined strings: splits on the first `=`, skips empty strings. */
export function deserializeParams(parameters: readonly string[]): Param[] {
  const out: Param[] = [];
  for (const param of parameters) {
    if (param === "") continue;
    const eq = param.indexOf("=");
    if (eq === -1) out.push({ key: param, value: "" });
    else out.push({ key: param.slice(0, eq), value: param.slice(eq + 1) });
  }
  return out;
}

/** Parses a kernel command line ("a=1 b quiet") into parameters. */
export function parseKernelCmdline(cmdline: string): Param[] {
  return deserializeParams(cmdline.split(/\s+/));
}

/**
 * Merges parameter lists left to right: a later parameter with the same key replaces the
 * earlier one in place, so configured parameters can override a driver's defaults.
 */
export function mergeParams(...lists: readonly (readonly Param[])[]): Param[] {
  const out: Param[] = [];
  for (const list of lists) {
    for (const p of list) {
      const at = p.key === "" ? -1 : out.findIndex((q) => q.key === p.key);
      if (at === -1) out.push({ ...p });
      else out[at] = { ...p };
    }
  }
  return out;
}

/** Joins parameters into one kernel command line. */
export function kernelCmdline(params: readonly Param[]): string {
  return serializeParams(params, "=").join(" ");
}
