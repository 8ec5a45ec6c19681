import { z } from "zod";

/**
 * The per-sandbox monitor's contract. A monitor is a small detached process that owns one
 * VMM as its child: it learns the VMM's exit by waiting for it (not by polling a pid), and
 * records it — with a reason — in files under the VM directory, so the truth survives the
 * cocoon process that started the VM. It can also watch the sandbox's main process through
 * the agent and stop the VM when that process ends (a container stops with its main process).
 *
 * Everything is generic: the launch is any argv (a netns prefix, a template's QEMU line), so
 * the CLI, the containerd shim and an OCI runtime front-end can all start VMMs through it.
 */

/** The environment variable every process cocoon starts for a VM carries: the VM directory. */
export const OWNER_ENV = "COCOON_VM_DIR";

const agentChannelSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("serial"), paths: z.array(z.string()).min(1) }),
  z.object({ kind: z.literal("hvsock"), path: z.string(), port: z.number().int() }),
  z.object({ kind: z.literal("unix"), path: z.string() }),
]);

/** What a monitor is started with (a JSON file, its one argument). */
export const monitorSpecSchema = z.object({
  /** `<state>/vm/<id>`: the monitor's records live in `<vmDir>/monitor/`. */
  vmDir: z.string().startsWith("/"),
  launch: z.object({
    file: z.string().min(1),
    args: z.array(z.string()),
    env: z.record(z.string(), z.string()).optional(),
    cwd: z.string().optional(),
    /** stdout and stderr of the VMM are appended here. */
    logPath: z.string(),
  }),
  /** The guest console log: a panic or an out-of-memory kill seen there explains an exit. */
  consoleLog: z.string().optional(),
  /** The guest agent, to hear the end of the sandbox's main process. */
  agent: agentChannelSchema.optional(),
  /**
   * Helper processes the VM cannot work without (virtiofsd). They are not the monitor's
   * children, so it polls them by pid and start time; when one dies while the VMM runs, the
   * guest would block on it for ever, so the monitor stops the VM (reason `helper-exited`).
   */
  helpers: z
    .array(
      z.object({
        name: z.string().min(1),
        pid: z.number().int().positive(),
        startTime: z.number().optional(),
      }),
    )
    .optional(),
});
export type MonitorSpec = z.infer<typeof monitorSpecSchema>;

/** Lines the monitor writes on its stdout to whoever started it (while that one listens). */
export const monitorEventSchema = z.discriminatedUnion("event", [
  z.object({
    event: z.literal("started"),
    pid: z.number().int().positive(),
    startTime: z.number().optional(),
  }),
  z.object({ event: z.literal("failed"), message: z.string() }),
  z.object({ event: z.literal("exited"), code: z.number().nullable(), signal: z.string().nullable() }),
]);
export type MonitorEvent = z.infer<typeof monitorEventSchema>;

const identitySchema = z.object({ pid: z.number().int().positive(), startTime: z.number().optional() });
export type ProcessIdentity = z.infer<typeof identitySchema>;

/** `<vmDir>/monitor/monitor.json`: who watches and what, written before the VMM can outlive anyone. */
export const monitorRecordSchema = z.object({
  monitor: identitySchema,
  vmm: identitySchema.optional(),
});
export type MonitorRecord = z.infer<typeof monitorRecordSchema>;

export const EXIT_REASONS = [
  "exited",
  "signal",
  "panic",
  "oom",
  "main-exited",
  "helper-exited",
  "stopped",
] as const;

/** `<vmDir>/monitor/vmm-exit.json`: how and why the VMM ended. */
export const vmmExitSchema = z.object({
  code: z.number().nullable(),
  signal: z.string().nullable(),
  reason: z.enum(EXIT_REASONS),
  /** One line for people: "the guest kernel panicked: …", "QEMU was killed by SIGKILL". */
  message: z.string(),
  at: z.string(),
});
export type VmmExit = z.infer<typeof vmmExitSchema>;

/** `<vmDir>/monitor/watch-main.json`: written by the sandbox when its main process starts. */
export const watchMainSchema = z.object({
  execId: z.string().min(1),
  /** How long to leave the VM up after the main process ends (an attached client drains its output). */
  graceMs: z.number().int().min(0).max(60_000).default(0),
});

/** `<vmDir>/monitor/main-exit.json`: the main process's end, as the agent reported it. */
export const mainExitSchema = z.object({
  execId: z.string(),
  exitCode: z.number().int(),
  signal: z.string().optional(),
  oomKilled: z.boolean().optional(),
  at: z.string(),
});
export type MainExit = z.infer<typeof mainExitSchema>;

export const MONITOR_FILES = {
  dir: "monitor",
  record: "monitor.json",
  vmmExit: "vmm-exit.json",
  watchMain: "watch-main.json",
  mainExit: "main-exit.json",
} as const;
