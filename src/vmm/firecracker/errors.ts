import { HypervisorError, type CocoonErrorOptions } from "../../errors.js";

/**
 * Firecracker answered a request with an error status. Firecracker has two error bodies: its
 * API layer sends `{"fault_message": …}`, its HTTP layer (micro-http: payload too large, too
 * many connections, malformed request) sends `{"error": …}`; `bodyKey` says which one came.
 */
export class FirecrackerApiError extends HypervisorError {
  readonly status: number;
  readonly faultMessage: string;
  readonly bodyKey: "fault_message" | "error" | "none";
  readonly method: string;
  readonly path: string;

  constructor(
    init: {
      status: number;
      faultMessage: string;
      bodyKey: FirecrackerApiError["bodyKey"];
      method: string;
      path: string;
    },
    options: CocoonErrorOptions = {},
  ) {
    super(
      "ERR_VMM_API",
      `Firecracker refused ${init.method} ${init.path} (${init.status}): ${init.faultMessage}`,
      {
        ...options,
        details: {
          status: init.status,
          method: init.method,
          path: init.path,
          faultMessage: init.faultMessage,
          ...options.details,
        },
      },
    );
    this.status = init.status;
    this.faultMessage = init.faultMessage;
    this.bodyKey = init.bodyKey;
    this.method = init.method;
    this.path = init.path;
  }
}

/**
 * The running Firecracker does not know a field, enum value or endpoint (too old, or too new for
 * something that was removed). Raised before anything is sent: Firecracker refuses unknown
 * fields with a 400, so the SDK says which version added (or removed) the thing instead.
 */
export class FirecrackerVersionError extends HypervisorError {
  readonly what: string;
  readonly running: string;
  readonly since: string | undefined;
  readonly removed: string | undefined;

  constructor(init: { what: string; running: string; since?: string; removed?: string }) {
    const why =
      init.since !== undefined
        ? `was added in Firecracker ${init.since}`
        : init.removed !== undefined
          ? `was removed in Firecracker ${init.removed}`
          : "is not known to any Firecracker version this SDK supports";
    super("ERR_NOT_SUPPORTED", `${init.what} ${why}; the running Firecracker is ${init.running}`, {
      details: { what: init.what, running: init.running, since: init.since, removed: init.removed },
    });
    this.what = init.what;
    this.running = init.running;
    this.since = init.since;
    this.removed = init.removed;
  }
}

/** A request body or path parameter the spec of the running version does not accept. */
export class FirecrackerRequestError extends HypervisorError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super("ERR_INVALID_ARGUMENT", message, { details });
  }
}

/** The API socket cannot be reached (no such socket, refused, reset, timed out). */
export class FirecrackerConnectionError extends HypervisorError {
  readonly socketPath: string;
  constructor(socketPath: string, message: string, options: CocoonErrorOptions = {}) {
    super("ERR_VMM_API", message, { ...options, details: { socketPath, ...options.details } });
    this.socketPath = socketPath;
  }
}
