import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cocoon, COCOON_BIN } from "../helpers/cli-process.js";
import { ASSETS_DIR, filesUnder, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";
import { busyboxRootfs } from "../helpers/rootfs.js";

let root: string;
let cleanupRoot: () => Promise<void>;
let env: NodeJS.ProcessEnv;
let rootfs: string;

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  env = { COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR, COCOON_CONFIG: "" };
  rootfs = await busyboxRootfs(path.join(root, "rootfs"));
}, 20 * 60_000);

afterAll(async () => {
  // whatever a failed test left is removed, then nothing may remain
  const ids = JSON.parse((await cocoon(["ps", "-a", "--json"], env).result).stdout.toString() || "[]") as {
    id: string;
  }[];
  if (ids.length) await cocoon(["rm", "-f", ...ids.map((s) => s.id)], env).result;
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

describe("the cocoon CLI on real VMs", () => {
  it("run prints the command's output and exits with its status", async () => {
    const r = await cocoon(["run", "--rm", "--", "sh", "-c", "echo hi; exit 3"], env).result;
    expect(r.stdout.toString()).toBe("hi\n");
    expect(r.stderr.toString()).toBe("");
    expect(r.code).toBe(3);
  });

  it("run -i pipes 10 MB of binary data through cat unchanged", async () => {
    const data = randomBytes(10 * 1024 * 1024);
    const r = await cocoon(["run", "--rm", "-i", "--", "cat"], env, data).result;
    expect(r.code).toBe(0);
    expect(createHash("sha256").update(r.stdout).digest("hex")).toBe(
      createHash("sha256").update(data).digest("hex"),
    );
  });

  it("run -t gives the command a terminal of the host terminal's size", async () => {
    // `script` gives cocoon a pseudo-terminal of a known size, as an interactive shell would.
    const out = execFileSync(
      "script",
      [
        "-qec",
        `stty rows 33 cols 99; ${process.execPath} ${COCOON_BIN} run --rm -t -- sh -c '[ -t 1 ] && echo tty; stty size'`,
        "/dev/null",
      ],
      { env: { ...process.env, ...env }, encoding: "utf8", timeout: 120_000 },
    );
    expect(out).toContain("tty");
    expect(out).toContain("33 99");
  });

  it("forwards Ctrl-C (SIGINT) to the command", async () => {
    const p = cocoon(
      [
        "run",
        "--rm",
        "--",
        "sh",
        "-c",
        "trap 'echo got-INT; exit 5' INT; echo ready; while :; do sleep 0.1; done",
      ],
      env,
    );
    await p.waitFor("ready");
    p.child.kill("SIGINT");
    const r = await p.result;
    expect(r.stdout.toString()).toContain("got-INT");
    expect(r.code).toBe(5);
  });

  it("lets a second cocoon process use a sandbox the first created, and rm leaves nothing", async () => {
    const started = await cocoon(
      ["run", "-d", "--name", "shared", "--rootfs", rootfs, "--", "sleep", "600"],
      env,
    ).result;
    expect(started.stdout.toString().trim()).toBe("shared");
    expect(started.code).toBe(0);

    const exec = await cocoon(
      ["exec", "shared", "--", "sh", "-c", "hostname; cat /etc/container-marker"],
      env,
    ).result;
    expect(exec.stdout.toString()).toBe("shared\nthis file is only in the container rootfs\n");
    expect(exec.code).toBe(0);

    const ps = JSON.parse((await cocoon(["ps", "--json"], env).result).stdout.toString()) as {
      id: string;
      state: string;
    }[];
    expect(ps).toContainEqual(expect.objectContaining({ id: "shared", state: "running" }));
    const inspect = JSON.parse((await cocoon(["inspect", "shared"], env).result).stdout.toString()) as {
      containers: { id: string; state: string }[];
    };
    expect(inspect.containers).toEqual([expect.objectContaining({ id: "main", state: "running" })]);

    await writeFile(path.join(root, "in.txt"), "from the host\n");
    expect((await cocoon(["cp", path.join(root, "in.txt"), "shared:/root/in.txt"], env).result).code).toBe(0);
    expect((await cocoon(["cp", "shared:/root/in.txt", path.join(root, "out.txt")], env).result).code).toBe(
      0,
    );
    expect(await readFile(path.join(root, "out.txt"), "utf8")).toBe("from the host\n");

    expect((await cocoon(["pause", "shared"], env).result).code).toBe(0);
    expect((await cocoon(["resume", "shared"], env).result).code).toBe(0);
    const logs = await cocoon(["logs", "shared"], env).result;
    expect(logs.stdout.toString()).toContain("cocoon-agent: ready");

    expect((await cocoon(["stop", "shared"], env).result).code).toBe(0);
    const late = await cocoon(["exec", "shared", "--", "true"], env).result;
    expect(late.code).toBe(125);
    expect(late.stderr.toString()).toMatch(
      /sandbox shared is not running \(it is stopped\) \[ERR_INVALID_STATE\]/,
    );

    expect((await cocoon(["rm", "shared"], env).result).code).toBe(0);
    expect(await processesMentioning(path.join(root, "run", "vm"))).toEqual([]);
    expect(await filesUnder(path.join(root, "run", "vm"))).toEqual([]);
    expect(await filesUnder(path.join(root, "run", "sbs"))).toEqual([]);
    expect(await readFile("/proc/self/mounts", "utf8")).not.toContain(root);
  });

  it("refuses bad input clearly", async () => {
    const unknown = await cocoon(["exec", "no-such-sandbox", "--", "true"], env).result;
    expect(unknown.code).toBe(125);
    expect(unknown.stderr.toString()).toBe('cocoon: no sandbox "no-such-sandbox" [ERR_NOT_FOUND]\n');

    const missing = await cocoon(["run", "--rm", "--", "no-such-command", "arg"], env).result;
    expect(missing.code).toBe(127);
    expect(missing.stderr.toString()).toBe(
      "cocoon: no-such-command: executable file not found in $PATH [ERR_EXEC_NOT_FOUND]\n",
    );

    const badRoot = await cocoon(["run", "--rm", "--rootfs", path.join(root, "nope"), "--", "sh"], env)
      .result;
    expect(badRoot.code).toBe(125);
    expect(badRoot.stderr.toString()).toContain(`the rootfs ${path.join(root, "nope")} does not exist`);

    const noCmd = await cocoon(["run", "--rm"], env).result;
    expect(noCmd.code).toBe(125);
    expect(noCmd.stderr.toString()).toContain("no command given");

    const badMem = await cocoon(["run", "--rm", "--memory", "lots", "--", "true"], env).result;
    expect(badMem.stderr.toString()).toContain('invalid --memory "lots"');

    // nothing was left behind by the failures
    const ps = JSON.parse((await cocoon(["ps", "-a", "--json"], env).result).stdout.toString()) as unknown[];
    expect(ps).toEqual([]);
  });
});
