import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PrivateContainerd } from "../helpers/containerd.js";
import { ASSETS_DIR, filesUnder, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";

const run = promisify(execFile);
const RUNTIME = ["--runtime", "io.containerd.cocoon.v1"];

let ctd: PrivateContainerd;
let image: string;
let root: string;
let cleanupRoot: () => Promise<void>;

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  ctd = await PrivateContainerd.start({
    COCOON_ROOT: root,
    COCOON_ASSETS: ASSETS_DIR,
    COCOON_CONFIG: "",
    COCOON_SHIM_SOCKET_DIR: `${root}/s`,
  });
  image = await ctd.importBusybox();
}, 10 * 60_000);

afterEach(async () => {
  // Nothing may outlive a test: no task, no VM, no virtiofsd, no shim, no mount under the bundles.
  // containerd's own command line names the directory too; the shim's (-address) and QEMU's (root) must be gone.
  const leaked = async () => [
    ...(await processesMentioning(ctd.dir)).filter((p) => p.pid !== ctd.pid),
    ...(await processesMentioning(root)),
  ];
  for (let i = 0; i < 100 && (await leaked()).length; i++) await new Promise((r) => setTimeout(r, 100));
  expect((await ctd.ctr(["task", "ls", "-q"])).stdout.toString().trim()).toBe("");
  expect(await leaked()).toEqual([]);
  const { stdout } = await run("findmnt", ["-rn", "-o", "TARGET"]);
  expect(stdout.split("\n").filter((t) => t.startsWith(`${ctd.dir}/state`) || t.startsWith(root))).toEqual(
    [],
  );
  expect(await filesUnder(`${root}/s`)).toEqual([]); // the shims' ttrpc sockets
});

afterAll(async () => {
  // COCOON_TEST_CTD_LOG=FILE keeps containerd's log (with the shims' logs in it) for debugging.
  if (process.env["COCOON_TEST_CTD_LOG"] && ctd)
    await writeFile(process.env["COCOON_TEST_CTD_LOG"], ctd.logText());
  await ctd?.stop();
  await cleanupRoot?.();
});

describe("containerd 1.6 running cocoon sandboxes through containerd-shim-cocoon-v1", () => {
  it("ctr run --rm prints both streams and exits with the task's status", async () => {
    const r = await ctd.ctr([
      "run",
      "--rm",
      ...RUNTIME,
      image,
      "t-run",
      "sh",
      "-c",
      "echo out; echo err >&2; exit 7",
    ]);
    expect(r.stdout.toString()).toBe("out\n");
    expect(r.stderr).toBe("err\n");
    expect(r.code).toBe(7);
  });

  it("ctr run carries 10 MB of stdin through cat unchanged", async () => {
    const data = randomBytes(10 * 1024 * 1024);
    const r = await ctd.ctr(["run", "--rm", ...RUNTIME, image, "t-cat", "cat"], data);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBe(data.length);
    expect(createHash("sha256").update(r.stdout).digest("hex")).toBe(
      createHash("sha256").update(data).digest("hex"),
    );
  });

  it("ctr run -t gets a terminal and the window size reaches it", async () => {
    const cmd = [
      "stty rows 33 cols 99;",
      `ctr --address ${ctd.address} run --rm -t ${RUNTIME.join(" ")} ${image} t-tty`,
      `sh -c 'for i in $(seq 100); do s=$(stty size); [ "$s" = "33 99" ] && break; sleep 0.1; done; [ -t 0 ] && echo is-a-tty; echo "size=$s"'`,
    ].join(" ");
    const { stdout } = await run("script", ["-qec", cmd, "/dev/null"], { env: ctd.env, timeout: 240_000 });
    expect(stdout).toContain("is-a-tty");
    expect(stdout).toContain("size=33 99");
  });

  it("run -d, task ls, exec, pause/resume, ps, metrics, kill -s 9, task rm, c rm", async () => {
    const id = "t-detached";
    const started = await ctd.ctr(["run", "-d", ...RUNTIME, image, id, "sh", "-c", "sleep 600"]);
    expect(started.code, started.stderr).toBe(0);
    const ls = async () => (await ctd.ctr(["task", "ls"])).stdout.toString();
    expect(await ls()).toMatch(new RegExp(`${id}\\s+\\d+\\s+RUNNING`));

    const ex = await ctd.ctr([
      "task",
      "exec",
      "--exec-id",
      "e1",
      id,
      "sh",
      "-c",
      "echo from-exec; echo e >&2; exit 3",
    ]);
    expect(ex.stdout.toString()).toBe("from-exec\n");
    expect(ex.stderr).toBe("e\n");
    expect(ex.code).toBe(3);

    expect((await ctd.ctr(["task", "pause", id])).code).toBe(0);
    expect(await ls()).toMatch(new RegExp(`${id}\\s+\\d+\\s+PAUSED`));
    expect((await ctd.ctr(["task", "resume", id])).code).toBe(0);
    expect(await ls()).toMatch(new RegExp(`${id}\\s+\\d+\\s+RUNNING`));

    const ps = await ctd.ctr(["task", "ps", id]);
    expect(ps.code, ps.stderr).toBe(0);
    expect(ps.stdout.toString()).toMatch(/^\s*\d+/m);

    const metrics = await ctd.ctr(["task", "metrics", id]);
    expect(metrics.code, metrics.stderr).toBe(0);
    // The container's cgroup in the guest: its sh and sleep (at least), some memory and CPU.
    const metric = (name: string) =>
      Number(new RegExp(`^${name.replace(".", "\\.")}\\s+(\\d+)`, "m").exec(metrics.stdout.toString())?.[1]);
    expect(metric("pids.current")).toBeGreaterThanOrEqual(1);
    expect(metric("memory.usage")).toBeGreaterThan(0);
    expect(metric("cpu.usage_usec")).toBeGreaterThan(0);

    // `ctr task attach` would delete the task once it exits: watch containerd's events instead.
    const events = spawn("ctr", ["--address", ctd.address, "events"], { env: ctd.env });
    let seen = "";
    events.stdout.on("data", (c: Buffer) => (seen += c.toString()));
    await new Promise((r) => setTimeout(r, 500));
    expect((await ctd.ctr(["task", "kill", "-s", "9", id])).code).toBe(0);
    for (let i = 0; i < 300 && !/STOPPED/.test(await ls()); i++) await new Promise((r) => setTimeout(r, 100));
    events.kill();
    // The task and its VM stay until Delete, as containerd expects.
    expect(await ls()).toMatch(new RegExp(`${id}\\s+\\d+\\s+STOPPED`));
    expect(seen).toMatch(new RegExp(`/tasks/exit .*"container_id":"${id}".*"exit_status":137`));
    const rmTask = await ctd.ctr(["task", "rm", id]);
    expect(rmTask.code, rmTask.stderr).toBe(0);
    expect(rmTask.stderr).toMatch(/exit code 137/); // ctr's warning, from the shim's DeleteResponse
    expect((await ctd.ctr(["c", "rm", id])).code).toBe(0);
    expect((await ctd.ctr(["c", "ls", "-q"])).stdout.toString().trim()).toBe("");
  });
});
