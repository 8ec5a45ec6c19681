/**
 * Firecracker's command line, per version (firecracker-api.md §15): flags added after 1.0 are
 * refused when the fake claims an older version, as the real parser refuses unknown flags.
 */
import { compareVersions } from "../../../src/vmm/firecracker/version.js";

export interface FcArgs {
  apiSock: string;
  id: string;
  seccompFilter?: string;
  noSeccomp: boolean;
  startTimeUs?: number;
  startTimeCpuUs?: number;
  parentCpuTimeUs?: number;
  configFile?: string;
  metadata?: string;
  noApi: boolean;
  logPath?: string;
  level?: string;
  module?: string;
  showLevel: boolean;
  showLogOrigin: boolean;
  bootTimer: boolean;
  version: boolean;
  snapshotVersion: boolean;
  describeSnapshot?: string;
  httpApiMaxPayloadSize: number;
  mmdsSizeLimit?: number;
  metricsPath?: string;
  enablePci: boolean;
  help: boolean;
}

interface FlagSpec {
  takesValue: boolean;
  since: string;
}

const FLAGS: Record<string, FlagSpec> = {
  "api-sock": { takesValue: true, since: "1.0.0" },
  id: { takesValue: true, since: "1.0.0" },
  "seccomp-filter": { takesValue: true, since: "1.0.0" },
  "no-seccomp": { takesValue: false, since: "1.0.0" },
  "start-time-us": { takesValue: true, since: "1.0.0" },
  "start-time-cpu-us": { takesValue: true, since: "1.0.0" },
  "parent-cpu-time-us": { takesValue: true, since: "1.0.0" },
  "config-file": { takesValue: true, since: "1.0.0" },
  metadata: { takesValue: true, since: "1.0.0" },
  "no-api": { takesValue: false, since: "1.0.0" },
  "log-path": { takesValue: true, since: "1.0.0" },
  level: { takesValue: true, since: "1.0.0" },
  "show-level": { takesValue: false, since: "1.0.0" },
  "show-log-origin": { takesValue: false, since: "1.0.0" },
  "boot-timer": { takesValue: false, since: "1.0.0" },
  version: { takesValue: false, since: "1.0.0" },
  "describe-snapshot": { takesValue: true, since: "1.0.0" },
  "http-api-max-payload-size": { takesValue: true, since: "1.0.0" },
  help: { takesValue: false, since: "1.0.0" },
  "mmds-size-limit": { takesValue: true, since: "1.1.0" },
  "metrics-path": { takesValue: true, since: "1.2.0" },
  module: { takesValue: true, since: "1.6.0" },
  "snapshot-version": { takesValue: false, since: "1.7.0" },
  "enable-pci": { takesValue: false, since: "1.13.0" },
};

export class ArgsError extends Error {}

function numberArg(name: string, value: string): number {
  if (!/^\d+$/.test(value)) throw new ArgsError(`Invalid value for argument '${name}': ${value}`);
  return Number(value);
}

export function parseFcArgs(argv: readonly string[], version: string): FcArgs {
  const values = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--"))
      throw new ArgsError(`Found argument '${arg}' which wasn't expected, or isn't valid in this context.`);
    const name = arg.slice(2);
    const spec = FLAGS[name];
    if (!spec || compareVersions(version, spec.since) < 0) {
      throw new ArgsError(`Found argument '${name}' which wasn't expected, or isn't valid in this context.`);
    }
    if (values.has(name)) throw new ArgsError(`The argument '${name}' was provided more than once.`);
    if (spec.takesValue) {
      const value = argv[i + 1];
      if (value === undefined || value.startsWith("--"))
        throw new ArgsError(`The argument '${name}' requires a value, but none was supplied`);
      values.set(name, value);
      i++;
    } else {
      values.set(name, true);
    }
  }
  const str = (n: string) => {
    const v = values.get(n);
    return typeof v === "string" ? v : undefined;
  };
  if (values.has("seccomp-filter") && values.has("no-seccomp")) {
    throw new ArgsError("Argument 'no-seccomp' cannot be used together with argument 'seccomp-filter'.");
  }
  if (values.has("no-api") && !values.has("config-file")) {
    throw new ArgsError("Argument 'no-api' requires 'config-file' to be present.");
  }
  const args: FcArgs = {
    apiSock: str("api-sock") ?? "/run/firecracker.socket",
    id: str("id") ?? "anonymous-instance",
    noSeccomp: values.has("no-seccomp"),
    noApi: values.has("no-api"),
    showLevel: values.has("show-level"),
    showLogOrigin: values.has("show-log-origin"),
    bootTimer: values.has("boot-timer"),
    version: values.has("version"),
    snapshotVersion: values.has("snapshot-version"),
    httpApiMaxPayloadSize: str("http-api-max-payload-size")
      ? numberArg("http-api-max-payload-size", str("http-api-max-payload-size")!)
      : 51200,
    enablePci: values.has("enable-pci"),
    help: values.has("help"),
  };
  const optional: [keyof FcArgs, string][] = [
    ["seccompFilter", "seccomp-filter"],
    ["configFile", "config-file"],
    ["metadata", "metadata"],
    ["logPath", "log-path"],
    ["level", "level"],
    ["module", "module"],
    ["describeSnapshot", "describe-snapshot"],
    ["metricsPath", "metrics-path"],
  ];
  for (const [key, flag] of optional) {
    const v = str(flag);
    if (v !== undefined) (args as unknown as Record<string, unknown>)[key] = v;
  }
  for (const [key, flag] of [
    ["startTimeUs", "start-time-us"],
    ["startTimeCpuUs", "start-time-cpu-us"],
    ["parentCpuTimeUs", "parent-cpu-time-us"],
    ["mmdsSizeLimit", "mmds-size-limit"],
  ] as const) {
    const v = str(flag);
    if (v !== undefined) args[key] = numberArg(flag, v);
  }
  if (!/^[A-Za-z0-9-]{1,64}$/.test(args.id)) throw new ArgsError(`Invalid instance ID: ${args.id}`);
  return args;
}
