import { CocoonError } from "../errors.js";
import { Code, TtrpcError } from "./ttrpc/status.js";

/** cocoon error codes → the gRPC codes containerd's errdefs understands. */
const BY_COCOON_CODE: Record<string, number> = {
  ERR_NOT_FOUND: Code.notFound,
  ERR_ALREADY_EXISTS: Code.alreadyExists,
  ERR_INVALID_STATE: Code.failedPrecondition,
  ERR_INVALID_ARGUMENT: Code.invalidArgument,
  ERR_INVALID_CONFIG: Code.invalidArgument,
  ERR_NOT_SUPPORTED: Code.unimplemented,
  ERR_RESOURCE_EXHAUSTED: Code.resourceExhausted,
  ERR_LOCK_TIMEOUT: Code.unavailable,
  ERR_VMM_TIMEOUT: Code.deadlineExceeded,
  ERR_AGENT_TIMEOUT: Code.deadlineExceeded,
  ERR_AGENT_DISCONNECTED: Code.unavailable,
  ERR_CANCELLED: Code.canceled,
};

export function toStatus(err: unknown): { code: number; message: string } {
  if (err instanceof TtrpcError) return { code: err.code, message: err.message };
  if (err instanceof CocoonError)
    return { code: BY_COCOON_CODE[err.code] ?? Code.unknown, message: `${err.code}: ${err.message}` };
  return { code: Code.unknown, message: err instanceof Error ? err.message : String(err) };
}
