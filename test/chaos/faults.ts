/**
 * The faults: each boots what it needs, injects one SIGKILL at a bad moment, checks that the
 * state is true and how soon, then removes everything with `rm -f` or `gc` and checks that
 * nothing is left. A fault throws when any of that does not hold.
 */
import { execFileSync } from "node:child_process";
import { access, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { findTaggedProcesses } from "../../src/monitor/reap.js";
import { type Spawned } from "../helpers/cli-process.js";
import { monitorPids, psAll } from "../helpers/crash.js";
import { busyboxRootfs } from "../helpers/rootfs.js";
import {
  MEMORY,
  check,
  leaks,
  recordedAfter,
  shown,
  stateIsTrue,
  timeUntilTrue,
  until,
  vmmOf,
  type ChaosContext,
  type Fault,
  type FaultOutcome,
} from "./harness.js";

/** The promise is "within 1 s"; TCG on a shared host gets slack before a fault fails. */
const STATE_TRUE_LIMIT_MS = 5_000;

async function runDetached(ctx: ChaosContext, id: string, extra: string[] = []): Promise<number> {
  await ctx.ok(["run", "-d", "--name", id, ...MEMORY, ...extra, "--", "sleep", "3600"]);
  const vmm = await vmmOf(ctx.root, id);
  check(vmm?.alive, `${id}: no live VMM after run -d`);
  return vmm.pid;
}

/** The state must become true, soon; returns the outcome's timing fields. */
async function expectTrue(
  ctx: ChaosContext,
  id: string,
  since: number,
  want?: (state: string) => boolean,
): Promise<Pick<FaultOutcome, "stateTrueMs" | "recordedMs" | "state">> {
  const t = await timeUntilTrue(ctx, id, since, want);
  check(t.ms !== undefined, `${id}: ps -a still says ${shown(t.row)}, which is not true or not expected`);
  check(t.ms <= STATE_TRUE_LIMIT_MS, `${id}: the state became true only after ${t.ms} ms`);
  const state = shown(t.row);
  const recordedMs = await recordedAfter(ctx.root, id, since);
  return { stateTrueMs: t.ms, state, ...(recordedMs !== undefined ? { recordedMs } : {}) };
}

/** `rm -f` (or `gc`), then nothing may be left under the root or tagged with it. */
async function cleanUp(ctx: ChaosContext, how: "rm -f" | "gc", id: string): Promise<string> {
  if (how === "rm -f") {
    const listed = (await psAll(ctx.env)).some((r) => r.id === id);
    const r = await ctx.cli(["rm", "-f", id]).result;
    if (!listed) {
      // ps's crash check already removed the half-created sandbox; rm -f says so, as docker's does
      check(/ERR_NOT_FOUND/.test(r.stderr.toString()), `rm -f ${id}: ${r.stderr.toString().trim()}`);
      const left = await leaks(ctx.root, [id]);
      check(left.length === 0, `left behind after ps's crash check: ${left.join("; ")}`);
      return "removed by the crash check of the next ps (rm -f: not found): nothing left";
    }
    check(r.code === 0, `rm -f ${id} exited ${r.code}: ${r.stderr.toString().trim()}`);
  } else {
    await ctx.ok(["gc"]);
    // gc removes what no live owner holds; a sandbox still listed (stopped or running) is the user's to rm.
    if ((await psAll(ctx.env)).some((r) => r.id === id)) {
      await ctx.ok(["rm", "-f", id]);
      const left = await leaks(ctx.root, [id]);
      check(left.length === 0, `left behind after gc + rm -f: ${left.join("; ")}`);
      return "gc, then rm -f of the still-listed sandbox: nothing left (processes, mounts, sockets, cgroups, state entries, locks)";
    }
  }
  const left = await leaks(ctx.root, [id]);
  check(left.length === 0, `left behind after ${how}: ${left.join("; ")}`);
  return `${how}: nothing left (processes, mounts, sockets, cgroups, state entries, locks)`;
}

/** Waits until the command printed `text`; fails if it ended first. */
async function printed(proc: Spawned, text: string): Promise<void> {
  const ended = await Promise.race([proc.waitFor(text).then(() => false), proc.result.then(() => true)]);
  if (ended) {
    const r = await proc.result;
    throw new Error(
      `the command ended (${r.code ?? r.signal}) before printing "${text}": ${r.stderr.toString().trim()}`,
    );
  }
}

function killVmm(pid: number): number {
  process.kill(pid, "SIGKILL");
  return Date.now();
}

const stopped = (s: string) => s.startsWith("stopped");

const vmmMidExec: Fault = {
  name: "vmm-killed-mid-exec",
  async run(ctx) {
    const id = "c-exec";
    const vmm = await runDetached(ctx, id);
    const exec = ctx.cli(["exec", id, "--", "sh", "-c", "echo started; sleep 100"]);
    await printed(exec, "started");
    const at = killVmm(vmm);
    // ps is asked from the moment of the kill, not once the exec has noticed
    const truth = expectTrue(ctx, id, at, stopped);
    truth.catch(() => undefined); // awaited below; a rejection before that is not unhandled
    const r = await exec.result;
    check(r.code !== 0, "the exec did not fail when its VM was killed");
    const t = await truth;
    const again = await ctx.cli(["exec", id, "--", "true"]).result;
    check(
      again.code !== 0 && /is not running/.test(again.stderr.toString()),
      "a new exec did not fail at once",
    );
    return {
      injected: `SIGKILL to QEMU (pid ${vmm}) while an exec ran`,
      ...t,
      cleanup: await cleanUp(ctx, "rm -f", id),
    };
  },
};

const vmmMidCp: Fault = {
  name: "vmm-killed-mid-cp",
  async run(ctx) {
    const id = "c-cp";
    const dir = await mkdtemp(path.join(os.tmpdir(), "cocoon-chaos-cp-"));
    try {
      const src = path.join(dir, "big");
      execFileSync("dd", ["if=/dev/urandom", `of=${src}`, "bs=1M", "count=64", "status=none"]);
      const vmm = await runDetached(ctx, id);
      const cp = ctx.cli(["cp", src, `${id}:/tmp/big`]);
      // The copy streams through the agent; killing once it has run a while lands mid-copy.
      await sleep(1_500);
      const at = killVmm(vmm);
      const truth = expectTrue(ctx, id, at, stopped);
      truth.catch(() => undefined); // awaited below; a rejection before that is not unhandled
      const r = await cp.result;
      check(r.code !== 0, `cp finished (exit ${r.code}) before the VMM was killed: not a mid-cp fault`);
      const t = await truth;
      return {
        injected: `SIGKILL to QEMU (pid ${vmm}) 1.5 s into a 64 MiB cp`,
        ...t,
        cleanup: await cleanUp(ctx, "rm -f", id),
      };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
};

const vmmWhilePaused: Fault = {
  name: "vmm-killed-while-paused",
  async run(ctx) {
    const id = "c-paused";
    const vmm = await runDetached(ctx, id);
    await ctx.ok(["pause", id]);
    check((await stateIsTrue(ctx, id)).row?.state === "paused", "not shown paused");
    const at = killVmm(vmm);
    const t = await expectTrue(ctx, id, at, stopped);
    return {
      injected: `SIGKILL to QEMU (pid ${vmm}) while paused`,
      ...t,
      cleanup: await cleanUp(ctx, "gc", id),
    };
  },
};

const virtiofsdKilled: Fault = {
  name: "virtiofsd-killed",
  async run(ctx) {
    const id = "c-vfs";
    const dir = await mkdtemp(path.join(os.tmpdir(), "cocoon-chaos-rootfs-"));
    try {
      await busyboxRootfs(dir);
      await runDetached(ctx, id, ["--rootfs", dir]);
      const helper = (await findTaggedProcesses(path.join(ctx.root, "run", "vm"))).find(
        (p) => p.name === "virtiofsd" && path.basename(p.vmDir) === id,
      );
      check(helper, "no virtiofsd for a sandbox with a directory rootfs");
      const exec = ctx.cli([
        "exec",
        id,
        "--",
        "sh",
        "-c",
        "echo started; while true; do ls / >/dev/null; sleep 0.2; done",
      ]);
      await printed(exec, "started");
      process.kill(helper.pid, "SIGKILL");
      const at = Date.now();
      const truth = expectTrue(ctx, id, at, (s) => s === "stopped (helper-exited)");
      truth.catch(() => undefined);
      // Before the fix this exec hung for ever: the guest waited on a file system nobody served.
      const r = await Promise.race([exec.result, sleep(120_000).then(() => undefined)]);
      if (!r) exec.child.kill("SIGKILL");
      check(r, "the exec still hangs 120 s after virtiofsd was killed");
      check(r.code !== 0, "the exec ended 0 though its file system went away");
      const t = await truth;
      return {
        injected: `SIGKILL to virtiofsd (pid ${helper.pid}) while an exec used the rootfs`,
        ...t,
        cleanup: await cleanUp(ctx, "rm -f", id),
      };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
};

const monitorKilled: Fault = {
  name: "monitor-killed",
  async run(ctx) {
    const id = "c-mon";
    await runDetached(ctx, id);
    const pids = await monitorPids(ctx.root, id);
    check(pids, "no monitor record");
    process.kill(pids.monitor, "SIGKILL");
    const at = Date.now();
    const t = await expectTrue(ctx, id, at, (s) => s === "running");
    const out = await ctx.ok(["exec", id, "--", "echo", "still-here"]);
    check(out === "still-here\n", `exec without a monitor printed ${JSON.stringify(out)}`);
    return {
      injected: `SIGKILL to the monitor (pid ${pids.monitor})`,
      ...t,
      cleanup: await cleanUp(ctx, "rm -f", id),
    };
  },
};

/** SIGKILLs a cocoon command at a given moment; the state must then be true and cleanable. */
function cliKilled(
  command: string,
  options: {
    /** Set up what the command acts on; its result is passed to `args`. */
    prepare?: (ctx: ChaosContext, id: string) => Promise<void>;
    args: (id: string) => string[];
    /** Resolves when the command is in the middle of its work. */
    moment: (ctx: ChaosContext, id: string, proc: Spawned) => Promise<string>;
    cleanup: "rm -f" | "gc";
    /** Checks after the kill (the state is already true). */
    after?: (ctx: ChaosContext, id: string, state: string) => Promise<void>;
  },
): Fault {
  return {
    name: `cocoon-killed-during-${command}`,
    async run(ctx) {
      const id = `c-${command}`;
      await options.prepare?.(ctx, id);
      const proc = ctx.cli(options.args(id));
      const when = await Promise.race([options.moment(ctx, id, proc), proc.result.then(() => undefined)]);
      check(when, `cocoon ${command} ended before it could be killed`);
      proc.child.kill("SIGKILL");
      const at = Date.now();
      await proc.result;
      const t = await expectTrue(ctx, id, at);
      await options.after?.(ctx, id, t.state ?? "");
      return {
        injected: `SIGKILL to \`cocoon ${options.args(id).join(" ")}\` ${when}`,
        ...t,
        cleanup: await cleanUp(ctx, options.cleanup, id),
      };
    },
  };
}

const vmmStarted = async (ctx: ChaosContext, id: string) => {
  await until("the VMM", async () => (await monitorPids(ctx.root, id))?.vmm !== undefined);
  return "once its VMM was started (mid-boot)";
};

const cliDuringCreate = cliKilled("create", {
  args: (id) => ["create", "--name", id, ...MEMORY, "--", "sleep", "3600"],
  moment: vmmStarted,
  cleanup: "rm -f",
});

/** When the command holds the sandbox's lock: it is changing the sandbox. */
const lockHeld = async (ctx: ChaosContext, id: string) => {
  const lock = path.join(ctx.root, "run", "locks", `sbs-${id}.lock`);
  await until(
    "the sandbox lock",
    () =>
      access(lock).then(
        () => true,
        () => false,
      ),
    60_000,
    5,
  );
  return "while it held the sandbox lock";
};

const cliDuringStart = cliKilled("start", {
  prepare: async (ctx, id) => void (await ctx.ok(["create", "--name", id, ...MEMORY, "--", "sleep", "3600"])),
  args: (id) => ["start", id],
  moment: lockHeld,
  cleanup: "rm -f",
  after: async (ctx, id, state) => {
    // A sandbox shown live must really be so: a ready one starts, a running one runs commands.
    if (state === "ready") await ctx.ok(["start", id]);
    if (state === "running" || state === "ready") {
      check((await ctx.ok(["exec", id, "--", "echo", "ok"])) === "ok\n", "exec after a killed start failed");
    }
  },
});

const cliDuringExec = cliKilled("exec", {
  prepare: async (ctx, id) => void (await runDetached(ctx, id)),
  args: (id) => ["exec", id, "--", "sh", "-c", "echo started; sleep 100"],
  moment: async (_ctx, _id, proc) => {
    await proc.waitFor("started");
    return "while its command ran";
  },
  cleanup: "rm -f",
  after: async (ctx, id, state) => {
    check(state === "running", `the sandbox is ${state} after its exec client was killed`);
    check((await ctx.ok(["exec", id, "--", "echo", "ok"])) === "ok\n", "the sandbox no longer runs commands");
  },
});

const cliDuringStop = cliKilled("stop", {
  prepare: async (ctx, id) => void (await runDetached(ctx, id)),
  args: (id) => ["stop", id],
  moment: lockHeld,
  cleanup: "gc",
});

const cliDuringRm = cliKilled("rm", {
  prepare: async (ctx, id) => void (await runDetached(ctx, id)),
  args: (id) => ["rm", "-f", id],
  moment: lockHeld,
  cleanup: "gc",
});

export const FAULTS: Fault[] = [
  vmmMidExec,
  vmmMidCp,
  vmmWhilePaused,
  virtiofsdKilled,
  cliDuringCreate,
  cliDuringStart,
  cliDuringExec,
  cliDuringStop,
  cliDuringRm,
  monitorKilled,
];
