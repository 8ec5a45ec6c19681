import { ConfigError } from "../../errors.js";
import type { CreateSandboxOptions } from "../../sandbox/runtime.js";
import { CPU_LIST } from "../../sandbox/resources/settings.js";

/** Resource control flags of `run` / `create`: host cgroup pinning and limits. */
export interface HostLimitFlags {
  cpusetCpus?: string;
  pidsLimit?: string;
  cpuShares?: string;
}

export function hostLimitOptions(
  o: HostLimitFlags,
): Pick<CreateSandboxOptions, "cpusetCpus" | "pidsLimit" | "cpuWeight"> {
  const out: Pick<CreateSandboxOptions, "cpusetCpus" | "pidsLimit" | "cpuWeight"> = {};
  if (o.cpusetCpus !== undefined) {
    if (!CPU_LIST.test(o.cpusetCpus))
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `invalid --cpuset-cpus "${o.cpusetCpus}": a CPU list such as 0-1,3`,
      );
    out.cpusetCpus = o.cpusetCpus;
  }
  if (o.pidsLimit !== undefined) {
    const n = Number(o.pidsLimit);
    if (!Number.isInteger(n) || n < 16)
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `invalid --pids-limit "${o.pidsLimit}": an integer of at least 16`,
      );
    out.pidsLimit = n;
  }
  if (o.cpuShares !== undefined) {
    const n = Number(o.cpuShares);
    if (!Number.isInteger(n) || n < 2 || n > 262_144)
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `invalid --cpu-shares "${o.cpuShares}": 2 to 262144 (docker's scale, 1024 = normal)`,
      );
    // docker's shares (1024 = normal) onto the cgroup v2 weight (100 = normal)
    out.cpuWeight = Math.min(10_000, Math.max(1, Math.round((n * 100) / 1024)));
  }
  return out;
}
