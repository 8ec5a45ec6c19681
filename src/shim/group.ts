import { createHash } from "node:crypto";
import path from "node:path";
import { podRoleOf } from "./pod.js";

/** Where the shims' ttrpc sockets live (short enough for the 106-byte socket path limit). */
export const SOCKET_DIR = process.env["COCOON_SHIM_SOCKET_DIR"] ?? "/run/cocoon/s";

/**
 * The group a task belongs to: its pod's sandbox id for a pod's (non-sandbox) container, else
 * its own id — so every container of a pod reaches the shim that its sandbox container started.
 */
export function groupIdFor(taskId: string, annotations: Record<string, string>): string {
  const pod = podRoleOf(taskId, annotations);
  return pod?.role === "container" ? pod.sandboxId : taskId;
}

/** containerd's convention: a hash of (containerd address, namespace, group). */
export function socketPathFor(address: string, namespace: string, groupId: string): string {
  const hash = createHash("sha256")
    .update(path.posix.join(address, namespace, groupId))
    .digest("hex");
  return path.join(SOCKET_DIR, hash);
}
