import { createHash } from "node:crypto";
import path from "node:path";

/** Where the shims' ttrpc sockets live (short enough for the 106-byte socket path limit). */
export const SOCKET_DIR = process.env["COCOON_SHIM_SOCKET_DIR"] ?? "/run/cocoon/s";

/** Annotation keys naming a container's pod, in Kata's order (containerd CRI, CRI-O, dockershim). */
const SANDBOX_ID_KEYS = [
  "io.kubernetes.cri.sandbox-id",
  "io.kubernetes.cri-o.SandboxID",
  "io.kubernetes.sandbox.id",
];
const CONTAINER_TYPE_KEYS: [string, string][] = [
  ["io.kubernetes.cri.container-type", "container"],
  ["io.kubernetes.cri-o.ContainerType", "container"],
  ["io.kubernetes.docker.type", "container"],
];

/**
 * The group a task belongs to: its pod's sandbox id for a pod's (non-sandbox) container, else
 * its own id — so every container of a pod reaches the shim that its sandbox container started.
 */
export function groupIdFor(taskId: string, annotations: Record<string, string>): string {
  const isPodContainer = CONTAINER_TYPE_KEYS.some(([k, v]) => annotations[k] === v);
  if (!isPodContainer) return taskId;
  for (const k of SANDBOX_ID_KEYS) if (annotations[k]) return annotations[k];
  return taskId;
}

/** containerd's convention: a hash of (containerd address, namespace, group). */
export function socketPathFor(address: string, namespace: string, groupId: string): string {
  const hash = createHash("sha256")
    .update(path.posix.join(address, namespace, groupId))
    .digest("hex");
  return path.join(SOCKET_DIR, hash);
}
