import type { RequestContext, RequestHandler } from "../../agent/protocol/connection.js";
import {
  isMethodName,
  METHODS,
  type MethodName,
  type ParsedParamsOf,
  type ResultOf,
} from "../../agent/protocol/methods.js";
import { AgentOpError } from "./errors.js";

export type Handler<M extends MethodName> = (
  params: ParsedParamsOf<M>,
  ctx: RequestContext,
) => Promise<ResultOf<M>>;
export type Handlers = { [M in MethodName]?: Handler<M> };

/**
 * Turns a table of handlers into the connection's request handler: unknown methods and
 * invalid params are refused with a code, and results are checked against the schema so a bug
 * in the agent shows up as an error rather than as a malformed answer.
 */
export function dispatcher(handlers: Handlers): RequestHandler {
  return async (method, params, ctx) => {
    if (!isMethodName(method)) throw new AgentOpError("NOT_SUPPORTED", `unknown method "${method}"`);
    const handler = handlers[method] as Handler<typeof method> | undefined;
    if (!handler)
      throw new AgentOpError("NOT_SUPPORTED", `method "${method}" is not implemented by this agent`);
    const spec = METHODS[method];
    const parsed = spec.params.safeParse(params);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new AgentOpError(
        "INVALID_ARGUMENT",
        `invalid params for ${method}: ${issue?.path.join(".") || "<root>"}: ${issue?.message ?? "invalid"}`,
      );
    }
    const result = await handler(parsed.data as ParsedParamsOf<typeof method>, ctx);
    const checked = spec.result.safeParse(result);
    if (!checked.success)
      throw new AgentOpError("INTERNAL", `the agent produced an invalid ${method} result`);
    return checked.data;
  };
}
