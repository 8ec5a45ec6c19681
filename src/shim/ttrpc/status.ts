/** gRPC status codes, as containerd's errdefs maps them (google.rpc.Code). */
export const Code = {
  ok: 0,
  canceled: 1,
  unknown: 2,
  invalidArgument: 3,
  deadlineExceeded: 4,
  notFound: 5,
  alreadyExists: 6,
  failedPrecondition: 9,
  resourceExhausted: 8,
  unimplemented: 12,
  internal: 13,
  unavailable: 14,
} as const;
export type CodeValue = (typeof Code)[keyof typeof Code];

/** An error a ttrpc method answers with: the code goes to the caller as google.rpc.Status. */
export class TtrpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = "TtrpcError";
  }
}
