import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import type { RequestContext } from "../../src/agent/protocol/connection.js";
import { METHODS, type MethodName } from "../../src/agent/protocol/methods.js";
import { dispatcher, type Handlers } from "../../src/guest/agent/dispatch.js";
import { AgentOpError } from "../../src/guest/agent/errors.js";
import { isOneLine, record, report, runs } from "./runs.js";

const names = Object.keys(METHODS) as MethodName[];

/** Handlers that answer nothing useful: only the dispatcher's validation is under test. */
const handlers = Object.fromEntries(names.map((m) => [m, () => Promise.resolve({})])) as unknown as Handlers;
const handle = dispatcher(handlers);
const ctx = { signal: new AbortController().signal, connection: undefined } as unknown as RequestContext;

/** Values near the schemas: right keys with wrong types, odd strings, numbers at the edges. */
const nearValue = fc.oneof(
  fc.constantFrom(
    "",
    "/",
    "/run/cocoon/x",
    "SIGTERM",
    "SIGKILL",
    "sig",
    "a",
    "../x",
    "A=B",
    "=x",
    "a".repeat(200),
  ),
  fc.constantFrom(0, -1, 1, 2 ** 31, 65535, 65536, Number.MAX_SAFE_INTEGER, 0.5, Number.NaN),
  fc.boolean(),
  fc.constant(null),
  fc.string(),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.jsonValue({ maxDepth: 2 }),
);
const knownKeys = [
  ...new Set(
    names.flatMap((m) => {
      const shape = (METHODS[m].params as unknown as { shape?: Record<string, unknown> }).shape;
      return shape ? Object.keys(shape) : [];
    }),
  ),
  "args",
  "env",
  "cwd",
  "user",
  "uid",
  "driver",
  "source",
  "fstype",
  "mountPoint",
];
const nearParams = fc.oneof(
  fc.dictionary(fc.constantFrom(...knownKeys), nearValue, { maxKeys: 6 }),
  fc.dictionary(
    fc.constantFrom(...knownKeys),
    fc.oneof(nearValue, fc.dictionary(fc.constantFrom(...knownKeys), nearValue, { maxKeys: 4 })),
    { maxKeys: 6 },
  ),
  fc.jsonValue({ maxDepth: 3 }),
  fc.anything({ maxDepth: 2 }),
);

afterAll(() => report("methods"));

describe("fuzz: method payloads", () => {
  it("the guest dispatcher refuses bad params with INVALID_ARGUMENT / NOT_SUPPORTED in one line", async () => {
    const n = runs(20_000);
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.constantFrom(...names), fc.string({ maxLength: 20 })),
        nearParams,
        async (method, params) => {
          try {
            await handle(method, params, ctx);
          } catch (err) {
            expect(err).toBeInstanceOf(AgentOpError);
            const e = err as AgentOpError;
            // Params passed validation and the stub's empty result did not match the schema.
            expect(["INVALID_ARGUMENT", "NOT_SUPPORTED", "INTERNAL"]).toContain(e.code);
            expect(isOneLine(e.message)).toBe(true);
          }
        },
      ),
      { numRuns: n },
    );
    record("guest-params", n);
  });

  it("the host's result validation never throws: every answer is accepted or refused by safeParse", () => {
    const n = runs(10_000);
    fc.assert(
      fc.property(fc.constantFrom(...names), nearParams, (method, raw) => {
        const r = METHODS[method].result.safeParse(raw);
        if (!r.success) expect(typeof r.error.issues[0]?.message).toBe("string");
      }),
      { numRuns: n },
    );
    record("host-results", n);
  });
});
