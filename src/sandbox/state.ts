import { z } from "zod";
import { SandboxError } from "../errors.js";
import type { DocumentKind } from "../store/atomic.js";
import { containerConfigSchema, sandboxConfigSchema } from "./config.js";
import { creatorSchema, stopCauseSchema } from "./liveness.js";

/** Sandbox states and the transitions allowed between them (Kata's, without restart). */
export const SANDBOX_STATES = ["ready", "running", "paused", "stopped"] as const;
export type SandboxState = (typeof SANDBOX_STATES)[number];

const TRANSITIONS: Record<SandboxState, readonly SandboxState[]> = {
  ready: ["running", "stopped"],
  running: ["paused", "stopped"],
  paused: ["running", "stopped"],
  stopped: [],
};

export function checkTransition(id: string, from: SandboxState, to: SandboxState): void {
  if (!TRANSITIONS[from].includes(to)) {
    throw new SandboxError("ERR_INVALID_STATE", `sandbox ${id} cannot go from ${from} to ${to}`, {
      details: { from, to },
    });
  }
}

export const CONTAINER_STATES = ["created", "running", "paused", "stopped"] as const;

const containerStateSchema = z.object({
  config: containerConfigSchema,
  state: z.enum(CONTAINER_STATES),
  /** How the rootfs reached the guest. */
  rootfs: z.object({
    kind: z.enum(["share", "block"]),
    /** Host path shared or attached (a directory, an extracted tarball, an ext4 image). */
    hostPath: z.string(),
    /** Files cocoon made for it (extracted tarball, image) and removes with the container. */
    owned: z.array(z.string()).default([]),
    /** Block device id when attached as a disk. */
    blockId: z.string().optional(),
    /** `hostPath` is cocoon's bind mount in the pod share, unmounted with the container. */
    inPodShare: z.boolean().optional(),
  }),
  exit: z
    .object({ exitCode: z.number(), signal: z.string().optional(), oomKilled: z.boolean().optional() })
    .optional(),
});
export type ContainerState = z.infer<typeof containerStateSchema>;

export const sandboxDocSchema = z.object({
  config: sandboxConfigSchema.extend({ hypervisorConfig: z.record(z.string(), z.unknown()) }),
  state: z.enum(SANDBOX_STATES),
  createdAt: z.string(),
  hypervisorState: z.record(z.string(), z.unknown()).optional(),
  containers: z.array(containerStateSchema),
  /** The main guest process's last known exit, if it ran. */
  guestProcessExit: z.object({ exitCode: z.number(), signal: z.string().optional() }).optional(),
  /** The VM's directory when it is not the usual one: a clone taken from the warm pool keeps its own. */
  vmDir: z.string().optional(),
  /** Set while a cocoon process creates the sandbox: if that process dies, the sandbox is half-made. */
  creating: creatorSchema.optional(),
  /** Why the sandbox stopped when cocoon did not stop it (the VMM died, the main process ended). */
  stopCause: stopCauseSchema.optional(),
});
export type SandboxDoc = z.infer<typeof sandboxDocSchema>;

export const SANDBOX_DOC: DocumentKind<SandboxDoc> = {
  schema: "cocoon.sandbox",
  version: 1,
  data: sandboxDocSchema,
};
