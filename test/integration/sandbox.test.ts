import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Runtime } from "../../src/sandbox/runtime.js";
import type { Sandbox } from "../../src/sandbox/sandbox.js";
import type { ProcessHandle } from "../../src/sandbox/process.js";
import { ASSETS_DIR, filesUnder, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";
import { busyboxRootfs, busyboxTarball } from "../helpers/rootfs.js";

let root: string;
let cleanupRoot: () => Promise<void>;
let runtime: Runtime;
let rootfsDir: string;
const sandboxes: Sandbox[] = [];

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  runtime = await Runtime.open({ root, env: { COCOON_ASSETS: ASSETS_DIR } });
  rootfsDir = await busyboxRootfs(path.join(root, "busybox"));
}, 20 * 60_000);

afterEach(async () => {
  for (const sb of sandboxes.splice(0)) await sb.delete({ force: true }).catch(() => undefined);
});

afterAll(async () => {
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

async function create(options: Parameters<Runtime["createSandbox"]>[0]): Promise<Sandbox> {
  const sb = await runtime.createSandbox({ memoryMB: 512, ...options });
  sandboxes.push(sb);
  return sb;
}

function text(b: Buffer): string {
  return b.toString("utf8");
}

/** Reads a process's stdout until `marker` appears; fails (rather than hangs) if the stream ends first. */
function until(handle: ProcessHandle, marker: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const onEnd = (): void => reject(new Error(`stdout ended before "${marker}"; it had: ${seen}`));
    const onData = (c: Buffer): void => {
      seen += c.toString();
      if (seen.includes(marker)) {
        handle.stdout.off("data", onData);
        handle.stdout.off("end", onEnd);
        resolve(seen);
      }
    };
    handle.stdout.on("data", onData);
    handle.stdout.once("end", onEnd);
  });
}

describe("sandboxes on real QEMU VMs", () => {
  it("runs a guest process: output, exit code, exec, missing programs", async () => {
    const sb = await create({ process: { args: ["sh", "-c", "echo hi; echo oops >&2; exit 3"] } });
    expect(sb.state).toBe("ready");
    const main = await sb.start({ attach: {}, keepRunning: true });
    const out = await main!.output();
    expect(text(out.stdout)).toBe("hi\n");
    expect(text(out.stderr)).toBe("oops\n");
    expect(out.exit).toEqual({ exitCode: 3 });
    const exec = await (await sb.exec({ process: { args: ["uname", "-s"] } })).output();
    expect(text(exec.stdout).trim()).toBe("Linux");
    await expect(sb.exec({ process: { args: ["no-such-program"] } })).rejects.toMatchObject({
      code: "ERR_EXEC_NOT_FOUND",
      exitCode: 127,
      message: "no-such-program: executable file not found in $PATH",
    });
    const status = await sb.status();
    expect(status).toMatchObject({
      state: "running",
      guestProcess: { state: "exited", exit: { exitCode: 3 } },
    });
  });

  it("pipes 10 MB of random binary data through cat byte-identical", async () => {
    const sb = await create({ process: { args: ["true"] } });
    await sb.start({ keepRunning: true });
    const data = randomBytes(10 * 1024 * 1024);
    const cat = await sb.exec({ process: { args: ["cat"] }, stdin: true });
    const collected = cat.output();
    cat.stdin!.end(data);
    const { stdout, exit } = await collected;
    expect(exit.exitCode).toBe(0);
    expect(stdout.length).toBe(data.length);
    expect(createHash("sha256").update(stdout).digest("hex")).toBe(
      createHash("sha256").update(data).digest("hex"),
    );
  });

  it("gives a terminal with the host's window size, and resizes it", async () => {
    const sb = await create({ process: { args: ["true"] } });
    await sb.start({ keepRunning: true });
    const p = await sb.exec({
      process: {
        args: [
          "sh",
          "-c",
          "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size; echo ready; read line; stty size; echo bye",
        ],
        terminal: true,
      },
      stdin: true,
      rows: 30,
      cols: 100,
    });
    const before = await until(p, "ready");
    expect(before).toContain("is-a-tty");
    expect(before).toContain("30 100");
    await p.resize(40, 120);
    p.stdin!.write("go\n");
    const rest = await until(p, "bye");
    expect(rest).toContain("40 120");
    expect((await p.wait()).exitCode).toBe(0);
  });

  it("delivers signals, and reports a process killed by one", async () => {
    const sb = await create({ process: { args: ["true"] } });
    await sb.start({ keepRunning: true });
    const trapper = await sb.exec({
      process: {
        args: ["sh", "-c", "trap 'echo got-TERM; exit 42' TERM; echo ready; while :; do sleep 0.1; done"],
      },
    });
    await until(trapper, "ready");
    await trapper.signal("SIGTERM");
    const seen = await until(trapper, "got-TERM");
    expect(seen).toContain("got-TERM");
    expect(await trapper.wait()).toEqual({ exitCode: 42 });

    const sleeper = await sb.exec({ process: { args: ["sleep", "600"] } });
    await sleeper.signal("SIGKILL");
    expect(await sleeper.wait()).toEqual({ exitCode: 137, signal: "SIGKILL" });

    // through a terminal too: the signal reaches the program, not only cocoon-pty
    const ttySleeper = await sb.exec({ process: { args: ["sleep", "600"], terminal: true } });
    await new Promise((r) => setTimeout(r, 300));
    await ttySleeper.signal("SIGKILL");
    expect(await ttySleeper.wait()).toEqual({ exitCode: 137, signal: "SIGKILL" });
  });

  it("runs a container from a busybox rootfs with its own hostname, PID namespace and root", async () => {
    const sb = await create({
      hostname: "sbhost",
      containers: [
        {
          id: "box",
          hostname: "boxhost",
          rootfs: { type: "dir", path: rootfsDir },
          process: {
            args: [
              "sh",
              "-c",
              "echo host=$(hostname) pid=$$; cat /etc/container-marker; ls /usr/lib/cocoon/agent-loader.cjs 2>&1; echo write > /tmp/w; sleep 600",
            ],
          },
        },
      ],
    });
    const main = await sb.start({ attach: {} });
    const out = await until(main!, "No such file");
    expect(out).toContain("host=boxhost pid=1");
    expect(out).toContain("this file is only in the container rootfs");
    expect(out).toMatch(/ls: \/usr\/lib\/cocoon\/agent-loader\.cjs: No such file or directory/);
    // exec joins the container: same root, same hostname, and PID 1 is the container's init
    // (the shell exec'd its last command, sleep)
    const ps = await (
      await sb.exec({
        process: { args: ["sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /tmp/w"] },
      })
    ).output();
    expect(text(ps.stdout)).toBe("boxhost\nsleep 600 \nwrite\n");
    // the guest itself is elsewhere: its hostname is the sandbox's, and it has the agent
    const guest = await (
      await sb.exec({
        inGuest: true,
        process: { args: ["sh", "-c", "hostname; ls /usr/lib/cocoon/agent-loader.cjs"] },
      })
    ).output();
    expect(text(guest.stdout)).toBe("sbhost\n/usr/lib/cocoon/agent-loader.cjs\n");
    // the container wrote into its own overlay: the shared rootfs on the host is untouched
    expect(existsSync(path.join(rootfsDir, "tmp/w"))).toBe(false);
    const stats = await (await sb.agent()).call("container.stats", { containerId: "box" });
    expect(stats.pids).toBeGreaterThanOrEqual(1);
    await sb.signal("SIGKILL", { all: true });
    expect(await main!.wait()).toMatchObject({ exitCode: 137, signal: "SIGKILL" });
  });

  it("unpacks a tarball rootfs, and copies files both ways", async () => {
    const tar = await busyboxTarball(path.join(root, "tarsrc"), path.join(root, "rootfs.tar"));
    const sb = await create({
      containers: [{ id: "t", rootfs: { type: "tar", path: tar }, process: { args: ["sleep", "600"] } }],
    });
    await sb.start();
    const host = path.join(root, "payload.bin");
    const payload = randomBytes(3 * 1024 * 1024 + 17);
    await writeFile(host, payload);
    expect(await sb.copyIn(host, "/root/payload.bin")).toBe(payload.length);
    const sum = await (await sb.exec({ process: { args: ["sha256sum", "/root/payload.bin"] } })).output();
    expect(text(sum.stdout).split(" ")[0]).toBe(createHash("sha256").update(payload).digest("hex"));
    await mkdir(path.join(root, "back"), { recursive: true });
    await sb.copyOut("/etc/container-marker", path.join(root, "back/marker"));
    expect(await readFile(path.join(root, "back/marker"), "utf8")).toBe(
      "this file is only in the container rootfs\n",
    );
    await expect(sb.copyOut("/no/such/file", path.join(root, "back/x"))).rejects.toMatchObject({
      code: "ERR_NOT_FOUND",
    });
    await sb.delete({ force: true });
    sandboxes.pop();
    // the unpacked tarball went with the sandbox
    expect(await filesUnder(path.join(root, "run", "shared"))).toEqual([]);
  });

  it("shares the rootfs over 9p, and attaches it as a disk where sharing is off", async () => {
    for (const [sharedFs, expectKind] of [
      ["virtio-9p", "share"],
      ["none", "block"],
    ] as const) {
      const cfgFile = path.join(root, `${sharedFs}.toml`);
      await writeFile(cfgFile, `[hypervisor.qemu]\nshared_fs = "${sharedFs}"\n`);
      const rt = await Runtime.open({ root, configPath: cfgFile, env: { COCOON_ASSETS: ASSETS_DIR } });
      const sb = await rt.createSandbox({
        memoryMB: 512,
        containers: [
          {
            id: "c",
            rootfs: { type: "dir", path: rootfsDir },
            process: { args: ["cat", "/etc/container-marker"] },
          },
        ],
      });
      sandboxes.push(sb);
      expect(sb.getAllContainers()[0]!.rootfs.kind).toBe(expectKind);
      const out = await (await sb.start({ attach: {} }))!.output();
      expect(text(out.stdout)).toBe("this file is only in the container rootfs\n");
      await sb.delete({ force: true });
      sandboxes.pop();
    }
  });

  it("runs two sandboxes at once without interference", async () => {
    const [a, b] = await Promise.all([
      create({ id: "twin-a", process: { args: ["sh", "-c", "echo a > /tmp/id; sleep 600"] } }),
      create({ id: "twin-b", process: { args: ["sh", "-c", "echo b > /tmp/id; sleep 600"] } }),
    ]);
    await Promise.all([a!.start(), b!.start()]);
    await new Promise((r) => setTimeout(r, 500));
    const read = async (sb: Sandbox): Promise<string> =>
      text((await (await sb.exec({ process: { args: ["cat", "/tmp/id"] } })).output()).stdout);
    expect(await read(a!)).toBe("a\n");
    expect(await read(b!)).toBe("b\n");
    await a!.stop();
    expect(await read(b!)).toBe("b\n");
    expect((await b!.status()).state).toBe("running");
  });

  it("refuses processes in a sandbox that is not running, and invalid transitions", async () => {
    const sb = await create({ process: { args: ["sleep", "600"] } });
    await expect(sb.exec({ process: { args: ["true"] } })).rejects.toMatchObject({
      code: "ERR_INVALID_STATE",
    });
    await expect(sb.resume()).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
    await sb.start();
    await sb.pause();
    await expect(sb.exec({ process: { args: ["true"] } })).rejects.toMatchObject({
      code: "ERR_INVALID_STATE",
      message: expect.stringContaining("it is paused"),
    });
    await sb.resume();
    await sb.stop();
    await expect(sb.exec({ process: { args: ["true"] } })).rejects.toMatchObject({
      code: "ERR_INVALID_STATE",
    });
    await expect(sb.start()).rejects.toMatchObject({
      code: "ERR_INVALID_STATE",
      message: expect.stringContaining("from stopped to running"),
    });
    await expect(sb.signal("SIGTERM")).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
  });

  it("refuses a rootfs that does not exist, before booting anything", async () => {
    await expect(
      runtime.createSandbox({
        id: "badroot",
        containers: [
          { id: "c", rootfs: { type: "dir", path: path.join(root, "nope") }, process: { args: ["sh"] } },
        ],
      }),
    ).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: `the rootfs directory ${path.join(root, "nope")} does not exist`,
    });
    expect(await runtime.store.sandboxExists("badroot")).toBe(false);
    expect(existsSync(path.join(root, "run", "vm", "badroot"))).toBe(false);
  });

  it("sets the guest clock, reseeds its RNG, pauses a container, and notices the VM dying", async () => {
    const sb = await create({
      containers: [
        { id: "p", rootfs: { type: "dir", path: rootfsDir }, process: { args: ["sleep", "600"] } },
      ],
    });
    await sb.start();
    const agent = await sb.agent();
    const target = Date.UTC(2030, 0, 2, 3, 4, 5);
    await agent.call("guest.setTime", { unixMs: target });
    const clock = await agent.call("guest.clock", {});
    expect(Math.abs(clock.realtimeMs - target)).toBeLessThan(60_000);
    expect(await agent.call("guest.reseedRandom", { data: randomBytes(64).toString("base64") })).toEqual({
      bytes: 64,
    });
    // Both in one request (what a clone gets first), back to the host's clock.
    const freshened = await agent.call("guest.freshen", {
      data: randomBytes(64).toString("base64"),
      unixMs: Date.now(),
    });
    expect(freshened.bytes).toBe(64);
    expect(Math.abs((await agent.call("guest.clock", {})).realtimeMs - Date.now())).toBeLessThan(5_000);
    const details = await agent.call("guest.details", {});
    expect(details).toMatchObject({ cpus: 1, supportsSeccomp: true });
    await agent.call("container.pause", { containerId: "p" });
    expect((await agent.call("container.list", {})).containers[0]).toMatchObject({ state: "paused" });
    await agent.call("container.resume", { containerId: "p" });
    expect((await agent.call("container.list", {})).containers[0]).toMatchObject({ state: "running" });

    const dead = new Promise<string>((resolve) => sb.monitor({ intervalMs: 200, onDead: resolve }));
    const qemuPid = (await sb.status()).pids[0]!;
    process.kill(qemuPid, "SIGKILL");
    expect(await dead).toMatch(/ERR_VMM_EXITED|ERR_AGENT/);
  });

  it("leaves no process, socket or directory after delete", async () => {
    const sb = await create({
      id: "tidy",
      containers: [
        { id: "c", rootfs: { type: "dir", path: rootfsDir }, process: { args: ["sleep", "600"] } },
      ],
    });
    await sb.start();
    expect((await sb.status()).pids.length).toBeGreaterThanOrEqual(2); // QEMU and virtiofsd
    await sb.delete({ force: true });
    sandboxes.pop();
    expect(await processesMentioning(path.join(root, "run", "vm", "tidy"))).toEqual([]);
    expect(await filesUnder(path.join(root, "run", "vm"))).toEqual([]);
    expect(await filesUnder(path.join(root, "run", "sbs"))).toEqual([]);
    const mounts = await readFile("/proc/self/mounts", "utf8");
    expect(mounts).not.toContain(root);
  });
});
