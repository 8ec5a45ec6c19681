/**
 * Errors the agent answers with. `code` travels to the host in the RESPONSE frame and is
 * stable: the host maps it to its own error classes.
 */
export type AgentErrorCode =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "INVALID_STATE"
  | "NOT_SUPPORTED"
  | "PERMISSION_DENIED"
  | "EXEC_NOT_FOUND"
  | "EXEC_NOT_EXECUTABLE"
  | "IO"
  | "INTERNAL";

export class AgentOpError extends Error {
  constructor(
    readonly code: AgentErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "AgentOpError";
  }
}
