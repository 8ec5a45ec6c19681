import { randomBytes } from "node:crypto";
import { isCocoonError } from "../../errors.js";
import { AgentClient, waitForAgent, type AgentConnectOptions } from "../../agent/client.js";
import type { AgentChannel } from "../../hypervisor/hypervisor.js";
import type { Logger } from "../../log.js";

/** Host randomness given to each clone: 64 bytes, credited, then the guest CRNG is re-keyed. */
const RESEED_BYTES = 64;
/** The warm-up's process; sandbox.destroy has the agent forget it. */
const WARM_UP_EXEC_ID = "cocoon-warm-up";

/**
 * How far the guest's clock may read outside the host's interval [request sent, answer back]
 * after it was set, and how many corrections are tried before giving up (with a warning: the
 * sandbox still works, its clock is only off).
 */
const CLOCK_TOLERANCE_MS = 100;
const CLOCK_CORRECTIONS = 3;

/**
 * A clone (or a restored snapshot) must not be a copy: before anything runs in it, it gets
 * fresh randomness from the host and the host's clock. Its identity (hostname, sandbox id)
 * and channel sockets come from sandbox.create and its own VM directory as for any sandbox.
 *
 * The clock is set from the host's time when the request was sent, so it ends up behind by as
 * long as the request waited before the agent handled it — seconds, in a busy guest under TCG
 * (three clones starting at once on two CPUs). Each answer carries the guest's clock just after
 * the step; when that lies outside the host's [sent, back] interval, the clock is set again
 * (the agent answers quickly by then) until it is within CLOCK_TOLERANCE_MS of that interval.
 */
export async function freshenGuest(agent: AgentClient, log?: Logger): Promise<void> {
  const data = randomBytes(RESEED_BYTES).toString("base64");
  let sent = Date.now();
  let guestMs: number;
  try {
    guestMs = (await agent.call("guest.freshen", { data, unixMs: sent })).realtimeMs;
  } catch (err) {
    // A snapshot taken under an agent without guest.freshen: its two steps, one call each.
    if (!(isCocoonError(err) && err.code === "ERR_NOT_SUPPORTED")) throw err;
    await agent.call("guest.reseedRandom", { data });
    sent = Date.now();
    guestMs = (await agent.call("guest.setTime", { unixMs: sent })).realtimeMs;
  }
  let back = Date.now();
  for (let i = 0; !clockWithin(guestMs, sent, back) && i < CLOCK_CORRECTIONS; i++) {
    sent = Date.now();
    guestMs = (await agent.call("guest.setTime", { unixMs: sent })).realtimeMs;
    back = Date.now();
  }
  if (!clockWithin(guestMs, sent, back))
    log?.warn({ guestMs, sent, back }, "the guest's clock could not be set within 100 ms of the host's");
}

function clockWithin(guestMs: number, sent: number, back: number): boolean {
  return guestMs >= sent - CLOCK_TOLERANCE_MS && guestMs <= back + CLOCK_TOLERANCE_MS;
}

/**
 * The guest-ready wait of a template and of a warm clone: the agent answers, then it runs the
 * calls a clone's create makes first (freshen, sandbox.create) and a first process once ahead
 * of time, and sandbox.destroy, so the create that takes the VM finds an agent serving no sandbox.
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
    // A sandbox's first process, as `start` or `exec` runs it.
    await client.call("process.start", { execId: WARM_UP_EXEC_ID, process: { args: ["true"] } });
    await client.call("process.wait", { execId: WARM_UP_EXEC_ID });
    await client.call("sandbox.destroy", {});
  } finally {
    await client.close();
  }
}
