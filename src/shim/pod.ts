/**
 * Kubernetes pods on one VM: which role a task plays in its pod (from the CRI annotations, in
 * Kata's order of keys), and how big the pod's VM should be.
 */

/** (container-type key, sandbox-id key, the sandbox value, the container value) per CRI runtime. */
const POD_KEYS = [
  ["io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id", "sandbox", "container"],
  ["io.kubernetes.cri-o.ContainerType", "io.kubernetes.cri-o.SandboxID", "sandbox", "container"],
  ["io.kubernetes.docker.type", "io.kubernetes.sandbox.id", "podsandbox", "container"],
] as const;

export type PodRole = { role: "sandbox"; sandboxId: string } | { role: "container"; sandboxId: string };

/** The task's role in a pod, or undefined for a plain task (`ctr run`): one VM of its own. */
export function podRoleOf(taskId: string, annotations: Record<string, string>): PodRole | undefined {
  for (const [typeKey, idKey, sandboxValue, containerValue] of POD_KEYS) {
    const type = annotations[typeKey];
    if (type === sandboxValue) return { role: "sandbox", sandboxId: annotations[idKey] || taskId };
    if (type === containerValue && annotations[idKey])
      return { role: "container", sandboxId: annotations[idKey] };
  }
  return undefined;
}

const CPU_QUOTA = "io.kubernetes.cri.sandbox-cpu-quota";
const CPU_PERIOD = "io.kubernetes.cri.sandbox-cpu-period";
const MEMORY = "io.kubernetes.cri.sandbox-memory";

function positiveNumber(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d+$/.test(v.trim())) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/**
 * The pod VM's size from the CRI sandbox annotations (containerd 1.7+ sums the pod's limits
 * into them): the pod's CPU and memory limits on top of the configured defaults, which cover
 * the guest kernel and agent (Kata's static sandbox sizing). Absent or malformed → undefined.
 */
export function podVmSize(
  annotations: Record<string, string>,
  defaults: { vcpus: number; memoryMB: number },
): { cpus?: number; memoryMB?: number } {
  const quota = positiveNumber(annotations[CPU_QUOTA]);
  const period = positiveNumber(annotations[CPU_PERIOD]);
  const memory = positiveNumber(annotations[MEMORY]);
  return {
    ...(quota && period ? { cpus: defaults.vcpus + Math.ceil(quota / period) } : {}),
    ...(memory ? { memoryMB: defaults.memoryMB + Math.ceil(memory / 2 ** 20) } : {}),
  };
}
