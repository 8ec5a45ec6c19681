import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runtime } from "../../src/sandbox/runtime.js";
import type { Sandbox } from "../../src/sandbox/sandbox.js";
import { ASSETS_DIR, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";

// Issue 14: the agent starts processes through cocoon-spawner, not by forking its node.
let root: string;
let cleanupRoot: () => Promise<void>;
let runtime: Runtime;
let sb: Sandbox;

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  runtime = await Runtime.open({ root, env: { COCOON_ASSETS: ASSETS_DIR } });
  sb = await runtime.createSandbox({ memoryMB: 512, process: { args: ["true"] } });
  await sb.start({ keepRunning: true });
}, 20 * 60_000);

afterAll(async () => {
  await sb?.delete({ force: true }).catch(() => undefined);
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

async function sh(script: string, user?: { uid: number; gid: number }): Promise<string> {
  const out = await (
    await sb.exec({ process: { args: ["sh", "-c", script], ...(user ? { user } : {}) } })
  ).output();
  if (out.exit.exitCode !== 0)
    throw new Error(`${script}: exit ${out.exit.exitCode}: ${out.stderr.toString()}`);
  return out.stdout.toString().trim();
}

describe("processes started through cocoon-spawner", () => {
  it("are the spawner's children, in a session of their own, as the user asked", async () => {
    const [ppidName, sid, pid] = (
      await sh("echo $(cat /proc/$PPID/comm) $(cut -d' ' -f6 /proc/$$/stat) $$")
    ).split(" ");
    expect(ppidName).toBe("cocoon-spawner");
    expect(sid).toBe(pid);
    expect(await sh("echo $(id -u) $(id -g)", { uid: 65534, gid: 65534 })).toBe("65534 65534");
  });

  it("keeps the agent's descriptors flat and leaves no zombie over 100 execs", async () => {
    const agentFds = "ls /proc/$(pidof node)/fd | wc -l";
    const before = Number(await sh(agentFds));
    for (let i = 0; i < 100; i++) {
      const p = await sb.exec({ process: { args: ["true"] }, stdin: i % 2 === 0 });
      p.stdin?.end();
      expect((await p.output()).exit).toEqual({ exitCode: 0 });
    }
    expect(Number(await sh(agentFds))).toBe(before);
    expect(await sh("grep -l '^[0-9]* ([^)]*) Z' /proc/[0-9]*/stat || true")).toBe("");
  });

  it("still starts processes after the spawner was killed", async () => {
    // The killer is the spawner's own child: its exit status goes with the spawner (255). It
    // waits until the agent has its pipes (a spawner gone before that fails the start).
    const killer = await sb.exec({ process: { args: ["sh", "-c", "sleep 1; kill -9 $PPID; sleep 0.2"] } });
    expect((await killer.output()).exit).toEqual({ exitCode: 255 });
    const out = await (await sb.exec({ process: { args: ["sh", "-c", "echo again; exit 5"] } })).output();
    expect(out.stdout.toString()).toBe("again\n");
    expect(out.exit).toEqual({ exitCode: 5 });
    expect(await sh("cat /proc/$PPID/comm")).toBe("cocoon-spawner");
  });
});
