import { randomBytes } from "node:crypto";
import { AgentClient, waitForAgent, type AgentConnectOptions } from "../../agent/client.js";
import type { AgentChannel } from "../../hypervisor/hypervisor.js";

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

/**
 * The guest-ready wait of a template and of a warm clone: the agent answers, then it runs the
 * calls a clone's create makes first (freshen, sandbox.create) once ahead of time, and
 * sandbox.destroy, so the create that takes the VM finds an agent serving no sandbox.
 * Measured (issue 11, a probe timing each step of a create from the warm pool, TCG): a
 * clone's first freshen took 0.56–1.14 s and its second 0.17–0.24 s; its first
 * sandbox.create 0.38–0.97 s and its second 0.04–0.06 s. The first call pays for the agent's
 * lazily compiled code (its schemas, child_process, fs) and, in a new QEMU, for translating
 * the guest code those paths run. Done in the template, the compiled code is in the memory
 * every clone maps; done in a warm clone, its QEMU has translated it too. A warm clone's
 * freshen here also gives it its own randomness while it waits; the create that takes it
 * freshens it again.
 */
export async function waitForWarmAgent(
  channel: AgentChannel,
  vmId: string,
  options: AgentConnectOptions,
): Promise<void> {
  await waitForAgent(channel, options);
  const client = await AgentClient.connect(channel, options);
  try {
    await freshenGuest(client);
    await client.call("sandbox.create", { sandboxId: vmId, hostname: vmId, dns: [], storages: [] });
    await client.call("sandbox.destroy", {});
  } finally {
    await client.close();
  }
}
