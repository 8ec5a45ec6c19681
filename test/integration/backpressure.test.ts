import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runtime } from "../../src/sandbox/runtime.js";
import type { Sandbox } from "../../src/sandbox/sandbox.js";
import { ASSETS_DIR, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";

/**
 * Issue 12: a command flooding stdout with nobody reading must not grow cocoon's memory
 * without bound. Credit-based flow control on the stream and the agent's bounded output pump
 * should stop `yes` in the guest (its pipe fills) instead of buffering on either side.
 */

const MiB = 1024 * 1024;
/** Generous: the protocol window is 256 KiB and the agent's pump 1 MiB per stream. */
const HOST_GROWTH_LIMIT = 64 * MiB;
const GUEST_GROWTH_LIMIT = 64 * MiB;

let root: string;
let cleanupRoot: () => Promise<void>;
let runtime: Runtime;
let sandbox: Sandbox | undefined;

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  runtime = await Runtime.open({ root, env: { COCOON_ASSETS: ASSETS_DIR } });
}, 20 * 60_000);

afterAll(async () => {
  await sandbox?.delete({ force: true }).catch(() => undefined);
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

/** VmRSS in bytes of the guest's node processes (the agent), read from /proc inside the guest. */
async function guestAgentRss(sb: Sandbox): Promise<number> {
  const script =
    'for d in /proc/[0-9]*; do if tr "\\0" " " < $d/cmdline 2>/dev/null | grep -q node; then ' +
    "grep VmRSS $d/status; fi; done";
  const out = await (await sb.exec({ process: { args: ["sh", "-c", script] } })).output();
  const kib = [...out.stdout.toString().matchAll(/VmRSS:\s+(\d+)\s+kB/g)].map((m) => Number(m[1]));
  return Math.max(0, ...kib) * 1024;
}

function gcIfExposed(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

describe("backpressure: an unread flood of stdout", () => {
  it("keeps host and guest memory bounded, then flows when read", async () => {
    sandbox = await runtime.createSandbox({ memoryMB: 512, process: { args: ["sleep", "3600"] } });
    await sandbox.start();
    const agentBefore = await guestAgentRss(sandbox);
    gcIfExposed();
    const hostBefore = process.memoryUsage().rss;

    const flood = await sandbox.exec({ process: { args: ["yes", "cocoon backpressure flood line"] } });
    // Nobody reads flood.stdout for ~10 s: sample this process's RSS meanwhile.
    let hostPeak = hostBefore;
    for (let i = 0; i < 20; i++) {
      await sleep(500);
      hostPeak = Math.max(hostPeak, process.memoryUsage().rss);
    }
    const agentDuring = await guestAgentRss(sandbox);
    const buffered = flood.stdout.readableLength;

    // Now read: bytes flow (far more than any buffer could have held).
    let received = 0;
    const target = 8 * MiB;
    await new Promise<void>((resolve, reject) => {
      const onData = (c: Buffer): void => {
        received += c.length;
        if (received >= target) {
          flood.stdout.off("data", onData);
          flood.stdout.pause();
          resolve();
        }
      };
      flood.stdout.on("data", onData);
      flood.stdout.once("error", reject);
    });
    hostPeak = Math.max(hostPeak, process.memoryUsage().rss);

    await flood.signal("SIGKILL");
    flood.stdout.resume(); // let the rest drain so the stream can end
    const exit = await flood.done();

    const figures = {
      hostBeforeMiB: +(hostBefore / MiB).toFixed(1),
      hostPeakMiB: +(hostPeak / MiB).toFixed(1),
      hostGrowthMiB: +((hostPeak - hostBefore) / MiB).toFixed(1),
      bufferedUnreadKiB: +(buffered / 1024).toFixed(1),
      agentBeforeMiB: +(agentBefore / MiB).toFixed(1),
      agentDuringMiB: +(agentDuring / MiB).toFixed(1),
      receivedMiB: +(received / MiB).toFixed(1),
    };
    console.log(`backpressure figures: ${JSON.stringify(figures)}`);

    expect(exit.signal).toBe("SIGKILL");
    expect(received).toBeGreaterThanOrEqual(target);
    // The unread stream holds at most about one flow-control window on the host.
    expect(buffered).toBeLessThanOrEqual(1 * MiB);
    expect(hostPeak - hostBefore).toBeLessThan(HOST_GROWTH_LIMIT);
    if (agentBefore > 0) expect(agentDuring - agentBefore).toBeLessThan(GUEST_GROWTH_LIMIT);

    await sandbox.delete({ force: true });
    sandbox = undefined;
  });
});
