import { randomBytes } from "node:crypto";
import type { AgentClient } from "../../agent/client.js";

/** Host randomness given to each clone: 64 bytes, credited, then the guest CRNG is re-keyed. */
const RESEED_BYTES = 64;

/**
 * A clone (or a restored snapshot) must not be a copy: before anything runs in it, it gets
 * fresh randomness from the host and the host's clock. Its identity (hostname, sandbox id)
 * and channel sockets come from sandbox.create and its own VM directory as for any sandbox.
 */
export async function freshenGuest(agent: AgentClient): Promise<void> {
  await agent.call("guest.reseedRandom", { data: randomBytes(RESEED_BYTES).toString("base64") });
  await agent.call("guest.setTime", { unixMs: Date.now() });
}
