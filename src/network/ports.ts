import { isIPv4 } from "node:net";
import { z } from "zod";
import { ConfigError } from "../errors.js";

/** A published port: `-p [IP:]HOSTPORT:GUESTPORT[/tcp|udp]`, as docker has it. */
export const portMappingSchema = z.object({
  hostIP: z.string().optional(),
  hostPort: z.number().int().min(1).max(65535),
  containerPort: z.number().int().min(1).max(65535),
  protocol: z.enum(["tcp", "udp"]),
});
export type PortMapping = z.infer<typeof portMappingSchema>;

function port(text: string, spec: string): number {
  const n = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= 65535))
    throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid port "${text}" in -p ${spec}: 1-65535`);
  return n;
}

export function parsePortSpec(spec: string): PortMapping {
  const [body, proto = "tcp", ...extra] = spec.split("/");
  if (extra.length || (proto !== "tcp" && proto !== "udp")) {
    throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid -p ${spec}: the protocol is tcp or udp`);
  }
  const parts = body!.split(":");
  if (parts.length < 2 || parts.length > 3) {
    throw new ConfigError(
      "ERR_INVALID_ARGUMENT",
      `invalid -p ${spec}: use [IP:]HOSTPORT:GUESTPORT[/tcp|udp], e.g. 8080:80 or 127.0.0.1:8080:80/tcp`,
    );
  }
  const hostIP = parts.length === 3 ? parts[0]! : undefined;
  if (hostIP !== undefined && !isIPv4(hostIP)) {
    throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid -p ${spec}: "${hostIP}" is not an IPv4 address`);
  }
  return {
    ...(hostIP ? { hostIP } : {}),
    hostPort: port(parts.at(-2)!, spec),
    containerPort: port(parts.at(-1)!, spec),
    protocol: proto,
  };
}

/** Two mappings of the same host port and protocol clash (whatever the guest port). */
export function checkPortClashes(ports: PortMapping[]): void {
  const seen = new Set<string>();
  for (const p of ports) {
    const key = `${p.protocol}/${p.hostPort}`;
    if (seen.has(key))
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `host port ${p.hostPort}/${p.protocol} is published twice`,
      );
    seen.add(key);
  }
}
