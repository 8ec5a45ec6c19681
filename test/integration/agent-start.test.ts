import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { Connection } from "../../src/agent/protocol/connection.js";
import type { StartTimeline } from "../../src/guest/agent/start-timeline.js";
import { bareQemuArgs, connectUnix } from "../../bench/boot.js";
import { sh } from "../../bench/datapath.js";
import { rootPerTest } from "../helpers/root-per-test.js";

const root = rootPerTest();

describe("the agent's cold start on a real VM (TCG)", () => {
  it("answers the first HELLO and records its start timeline in the guest", async () => {
    const { args, sockets } = await bareQemuArgs(root(), "start");
    const qemu = spawn("qemu-system-x86_64", args, { stdio: "ignore" });
    const exited = new Promise((r) => qemu.once("exit", r));
    try {
      const conn = new Connection(await connectUnix(sockets.get("cocoon.agent.0")!), { role: "client" });
      await conn.hello("test", 120_000);
      // Written just after the first answer: wait for it.
      const json = await sh(
        conn,
        "for i in $(seq 50); do [ -s /run/cocoon/start-timeline.json ] && break; sleep 0.1; done; cat /run/cocoon/start-timeline.json",
      );
      const t = JSON.parse(json) as StartTimeline;
      const at = new Map(t.marks.map((m) => [m.name, m.at]));
      // Node's phases in order, after the kernel forked the process, on the guest's clock.
      expect(t.forked).toBeGreaterThan(0);
      expect(t.forked!).toBeLessThanOrEqual(t.timeOrigin + 0.011);
      const phases = ["nodeStart", "v8Start", "environment", "bootstrapComplete"].map((p) => t.node[p]!);
      expect(phases).toEqual([...phases].sort((a, b) => a - b));
      // The default image has no startup snapshot: the loader compiled the bundle with the code cache.
      expect(at.has("snapshot main")).toBe(false);
      const steps = [
        "loader",
        "code cache read",
        "bundle read",
        "bundle compiled",
        "bundle evaluated",
        "startAgent",
        "ports listed",
        "hello answered",
      ].map((name) => {
        expect(at.has(name), name).toBe(true);
        return at.get(name)!;
      });
      expect(steps).toEqual([...steps].sort((a, b) => a - b));
      expect(steps[0]).toBeGreaterThan(t.node.bootstrapComplete!);
      const port = t.marks.find((m) => m.name.endsWith(" first read"));
      expect(port?.name).toMatch(/^\/dev\/vport\d+p\d+ first read$/);
      expect(port!.at).toBeLessThanOrEqual(at.get("hello answered")!);
      conn.close();
    } finally {
      qemu.kill("SIGKILL");
      await exited;
    }
  });
});
