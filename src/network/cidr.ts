import { isIPv4 } from "node:net";
import { ConfigError } from "../errors.js";

/**
 * IPv4 addresses and CIDR blocks as numbers: enough to validate user input (--allow-egress,
 * subnets) and to tell whether two blocks overlap (a subnet that clashes with a host route).
 */

export interface Cidr {
  /** The network address (host bits cleared). */
  network: number;
  prefix: number;
  /** As the user wrote it, normalised: "10.88.0.0/16". */
  text: string;
}

export function ipToInt(ip: string): number {
  if (!isIPv4(ip)) throw new ConfigError("ERR_INVALID_ARGUMENT", `"${ip}" is not an IPv4 address`);
  return ip.split(".").reduce((n, o) => n * 256 + Number(o), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** "10.0.0.0/8", or a bare address (a /32). A host part after the prefix is refused, not masked. */
export function parseCidr(text: string, what = "CIDR"): Cidr {
  const m = /^([0-9.]+)(?:\/(\d{1,2}))?$/.exec(text.trim());
  const prefix = m?.[2] === undefined ? 32 : Number(m[2]);
  if (!m || !isIPv4(m[1]!) || prefix > 32) {
    throw new ConfigError(
      "ERR_INVALID_ARGUMENT",
      `invalid ${what} "${text}": use an IPv4 block such as 10.1.0.0/16`,
    );
  }
  const ip = ipToInt(m[1]!);
  const network = (ip & maskOf(prefix)) >>> 0;
  if (network !== ip) {
    throw new ConfigError(
      "ERR_INVALID_ARGUMENT",
      `invalid ${what} "${text}": the address has bits set past /${prefix} (did you mean ${intToIp(network)}/${prefix}?)`,
    );
  }
  return { network, prefix, text: `${intToIp(network)}/${prefix}` };
}

export function cidrContains(c: Cidr, ip: string): boolean {
  return (ipToInt(ip) & maskOf(c.prefix)) >>> 0 === c.network;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  const p = Math.min(a.prefix, b.prefix);
  return (a.network & maskOf(p)) >>> 0 === (b.network & maskOf(p)) >>> 0;
}

/** The n-th address of a block (1 = the usual gateway). */
export function nthAddress(c: Cidr, n: number): string {
  return intToIp((c.network + n) >>> 0);
}
