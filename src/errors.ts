/**
 * cocoon's error model. Every error a user can see is a CocoonError with a permanent `code`:
 * codes never change meaning, so scripts and the CLI's exit codes can rely on them. The
 * catalogue below is the single place where codes, their meaning and their exit status live;
 * docs/errors.md is generated from it.
 */

export interface ErrorInfo {
  /** One line: what this code means. */
  readonly summary: string;
  /** Process exit status the CLI uses for it. */
  readonly exitCode: number;
}

/** Exit statuses, by category (see docs/errors.md). */
export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  notFound: 3,
  conflict: 4,
  host: 5,
  vmm: 6,
  agent: 7,
  unsupported: 8,
  timeout: 9,
  /** `run`/`exec`: cocoon itself failed before the command ran (as docker and podman do). */
  runFailed: 125,
  /** `run`/`exec`: the command was found but could not be executed. */
  cannotExecute: 126,
  /** `run`/`exec`: the command does not exist in the guest. */
  commandNotFound: 127,
} as const;

export const ERROR_CATALOG = {
  ERR_INTERNAL: {
    summary: "an unexpected internal error (a bug: please report it)",
    exitCode: ExitCode.internal,
  },
  ERR_INVALID_ARGUMENT: {
    summary: "a command-line argument or API argument is invalid",
    exitCode: ExitCode.usage,
  },
  ERR_INVALID_CONFIG: {
    summary: "the configuration (file, flags or annotations) is invalid",
    exitCode: ExitCode.usage,
  },
  ERR_UNKNOWN_HYPERVISOR: {
    summary: "the hypervisor type is not one cocoon knows",
    exitCode: ExitCode.usage,
  },
  ERR_INVALID_KERNEL_PARAM: { summary: "a kernel parameter is malformed", exitCode: ExitCode.usage },
  ERR_CONFIG_FILE: { summary: "the configuration file cannot be read or parsed", exitCode: ExitCode.usage },
  ERR_ASSET_INVALID: {
    summary: "a guest or hypervisor asset is missing or unusable",
    exitCode: ExitCode.usage,
  },
  ERR_ASSET_HASH_MISMATCH: {
    summary: "an asset's SHA-512 does not match the expected hash",
    exitCode: ExitCode.usage,
  },
  ERR_ANNOTATION_FORBIDDEN: {
    summary: "an annotation is not enabled or its value is not allow-listed",
    exitCode: ExitCode.usage,
  },
  ERR_HOST_PROBE: { summary: "a host probe (/proc, /sys, /dev) failed", exitCode: ExitCode.host },
  ERR_HOST_MISSING_TOOL: {
    summary: "a required host program or package is missing",
    exitCode: ExitCode.host,
  },
  ERR_STATE_CORRUPT: {
    summary: "a persisted state file is corrupt or truncated; it was left untouched",
    exitCode: ExitCode.conflict,
  },
  ERR_STATE_VERSION: {
    summary: "a persisted state file has a schema version this cocoon cannot read",
    exitCode: ExitCode.conflict,
  },
  ERR_STATE_IO: { summary: "reading or writing persisted state failed", exitCode: ExitCode.host },
  ERR_LOCK_TIMEOUT: {
    summary: "another cocoon process holds the lock for too long",
    exitCode: ExitCode.conflict,
  },
  ERR_NOT_FOUND: { summary: "the sandbox, container or process does not exist", exitCode: ExitCode.notFound },
  ERR_ALREADY_EXISTS: {
    summary: "a sandbox or container with that id already exists",
    exitCode: ExitCode.conflict,
  },
  ERR_INVALID_STATE: {
    summary: "the operation is not allowed in the object's current state",
    exitCode: ExitCode.conflict,
  },
  ERR_NOT_SUPPORTED: {
    summary: "the operation is not supported by this hypervisor or version",
    exitCode: ExitCode.unsupported,
  },
  ERR_RESOURCE_EXHAUSTED: {
    summary: "a limited resource (UUIDs, device slots, CIDs) is used up",
    exitCode: ExitCode.conflict,
  },
  ERR_SNAPSHOT_INCOMPATIBLE: {
    summary: "a snapshot was made by another cocoon version, host or VM shape and cannot be restored here",
    exitCode: ExitCode.conflict,
  },
  ERR_VMM_START: { summary: "the VMM process failed to start or exited during boot", exitCode: ExitCode.vmm },
  ERR_VMM_EXITED: { summary: "the VMM process exited unexpectedly", exitCode: ExitCode.vmm },
  ERR_VMM_API: {
    summary: "the VMM's control API (QMP, Firecracker REST) refused a request",
    exitCode: ExitCode.vmm,
  },
  ERR_VMM_TIMEOUT: { summary: "the VMM did not answer or boot in time", exitCode: ExitCode.timeout },
  ERR_GUEST_PANIC: { summary: "the guest kernel panicked", exitCode: ExitCode.vmm },
  ERR_AGENT_TIMEOUT: { summary: "the guest agent did not answer in time", exitCode: ExitCode.timeout },
  ERR_AGENT_PROTOCOL: {
    summary: "the agent channel carried an invalid frame or message",
    exitCode: ExitCode.agent,
  },
  ERR_AGENT_DISCONNECTED: { summary: "the agent channel closed", exitCode: ExitCode.agent },
  ERR_AGENT_REMOTE: { summary: "the guest agent reported an error", exitCode: ExitCode.agent },
  ERR_EXEC_NOT_FOUND: {
    summary: "the program to run does not exist in the guest or container",
    exitCode: ExitCode.commandNotFound,
  },
  ERR_EXEC_NOT_EXECUTABLE: {
    summary: "the program to run exists but cannot be executed",
    exitCode: ExitCode.cannotExecute,
  },
  ERR_PROCESS: {
    summary: "spawning, signalling or waiting for a host process failed",
    exitCode: ExitCode.host,
  },
  ERR_IMAGE_BUILD: { summary: "building a guest asset (kernel, rootfs) failed", exitCode: ExitCode.host },
  ERR_CANCELLED: { summary: "the operation was cancelled", exitCode: ExitCode.internal },
  // Resource control (host cgroups, live resize)
  ERR_CGROUP: {
    summary: "a host cgroup could not be created, written, joined or removed",
    exitCode: ExitCode.host,
  },
  ERR_RESOURCE_LIMIT: {
    summary: "a resource request is beyond what the host, the VM or its contents allow",
    exitCode: ExitCode.usage,
  },
} as const satisfies Record<string, ErrorInfo>;

export type ErrorCode = keyof typeof ERROR_CATALOG;

export interface CocoonErrorOptions {
  cause?: unknown;
  /** Structured context for logs and `--json` output (paths, ids, states). */
  details?: Record<string, unknown>;
  /** A hint telling the user what to try next; printed on its own line by the CLI. */
  hint?: string;
}

export class CocoonError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: CocoonErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details ?? {};
    this.hint = options.hint;
  }

  get exitCode(): number {
    return ERROR_CATALOG[this.code].exitCode;
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      ...(this.hint ? { hint: this.hint } : {}),
      ...(Object.keys(this.details).length ? { details: this.details } : {}),
    };
  }
}

/** Bad configuration, flags, annotations or kernel parameters. */
export class ConfigError extends CocoonError {}
/** Host probing and host programs. */
export class HostError extends CocoonError {}
/** Persisted state and locks. */
export class StoreError extends CocoonError {}
/** The hypervisor layer and VMM processes. */
export class HypervisorError extends CocoonError {}
/** The agent channel and the guest agent. */
export class AgentError extends CocoonError {}
/** Sandbox and container lifecycle. */
export class SandboxError extends CocoonError {}

export function isCocoonError(err: unknown): err is CocoonError {
  return err instanceof CocoonError;
}

/** The message of any thrown value, for wrapping foreign errors into ours. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** The errno code (`ENOENT`, `EEXIST`, ...) of a Node system error, if it is one. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === "string" ? code : undefined;
  }
  return undefined;
}
