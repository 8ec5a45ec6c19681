import { describe, expect, it, vi } from "vitest";
import type { AgentClient } from "../../agent/client.js";
import { AgentError } from "../../errors.js";
import type { Logger } from "../../log.js";
import { freshenGuest } from "./clone.js";

interface Call {
  method: string;
  params: Record<string, unknown>;
}

/** An agent answering each call with `answer(call)`; it records every call. */
function fakeAgent(answer: (c: Call) => unknown): { agent: AgentClient; calls: Call[] } {
  const calls: Call[] = [];
  const agent = {
    call: async (method: string, params: Record<string, unknown>) => {
      const c = { method, params };
      calls.push(c);
      return answer(c);
    },
  } as unknown as AgentClient;
  return { agent, calls };
}

describe("freshenGuest", () => {
  it("freshens in one request when the guest's clock then reads the host's", async () => {
    const { agent, calls } = fakeAgent(() => ({ bytes: 64, realtimeMs: Date.now() }));
    await freshenGuest(agent);
    expect(calls.map((c) => c.method)).toEqual(["guest.freshen"]);
    expect(Buffer.from(calls[0]!.params.data as string, "base64")).toHaveLength(64);
  });

  it("sets the clock again when the request waited in a busy guest (its clock is behind)", async () => {
    let behind = 3;
    const { agent, calls } = fakeAgent(({ params }) => ({
      bytes: 64,
      // the first two answers: the step was taken from a host time 2 s old
      realtimeMs: (params.unixMs as number) - (behind-- > 1 ? 2_000 : 0),
    }));
    await freshenGuest(agent);
    expect(calls.map((c) => c.method)).toEqual(["guest.freshen", "guest.setTime", "guest.setTime"]);
  });

  it("gives up after three corrections with a warning, not an error", async () => {
    const { agent, calls } = fakeAgent(() => ({ bytes: 64, realtimeMs: Date.now() - 60_000 }));
    const warn = vi.fn();
    await freshenGuest(agent, { warn } as unknown as Logger);
    expect(calls.filter((c) => c.method === "guest.setTime")).toHaveLength(3);
    expect(warn).toHaveBeenCalledOnce();
  });

  it("falls back to reseedRandom + setTime on an agent without guest.freshen", async () => {
    const { agent, calls } = fakeAgent(({ method }) => {
      if (method === "guest.freshen")
        throw new AgentError("ERR_NOT_SUPPORTED", 'method "guest.freshen" is not implemented by this agent');
      return method === "guest.reseedRandom" ? { bytes: 64 } : { realtimeMs: Date.now() };
    });
    await freshenGuest(agent);
    expect(calls.map((c) => c.method)).toEqual(["guest.freshen", "guest.reseedRandom", "guest.setTime"]);
  });

  it("passes other agent errors on", async () => {
    const { agent } = fakeAgent(() => {
      throw new AgentError("ERR_AGENT_REMOTE", "cocoon-guestctl: RNDADDENTROPY: Operation not permitted");
    });
    await expect(freshenGuest(agent)).rejects.toMatchObject({ code: "ERR_AGENT_REMOTE" });
  });
});
