import { copyFile, readFile, rm, truncate, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runtime } from "../../src/sandbox/runtime.js";
import type { Sandbox } from "../../src/sandbox/sandbox.js";
import { cocoon } from "../helpers/cli-process.js";
import { ASSETS_DIR, entriesUnder, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";
import { busyboxRootfs } from "../helpers/rootfs.js";

/**
 * VM templates (Kata's VM factory) on real QEMU: the template is made once, sandboxes are clones
 * of it, and a clone is not a copy (own hostname, own random stream, the host's clock).
 */

let root: string;
let cleanupRoot: () => Promise<void>;
let runtime: Runtime;
let env: NodeJS.ProcessEnv;
let rootfsDir: string;
/** A private copy of the guest rootfs: touching it must make the template out of date. */
let guestImage: string;

beforeAll(async () => {
  const assets = await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  guestImage = path.join(root, "guest-rootfs.ext4");
  await copyFile(assets.rootfs, guestImage);
  const configPath = path.join(root, "cocoon.toml");
  await writeFile(
    configPath,
    `[hypervisor.qemu]\nimage = ${JSON.stringify(guestImage)}\n\n[factory]\nenable_template = true\n`,
  );
  env = { COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR, COCOON_CONFIG: configPath };
  runtime = await Runtime.open({ root, configPath, env: { COCOON_ASSETS: ASSETS_DIR } });
  rootfsDir = await busyboxRootfs(path.join(root, "busybox"));
}, 20 * 60_000);

afterAll(async () => {
  for (const s of await runtime.listSandboxes().catch(() => []))
    await (await runtime.loadSandbox(s.id)).delete({ force: true }).catch(() => undefined);
  await runtime.factory.template.destroy().catch(() => undefined);
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

async function cli(args: string[]): Promise<string> {
  const r = await cocoon(args, env).result;
  if (r.code !== 0) throw new Error(`cocoon ${args.join(" ")} exited ${r.code}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

interface Status {
  exists: boolean;
  matches?: boolean;
  currentKey?: string;
  meta?: { key: string; createdAt: string };
}
async function status(): Promise<Status> {
  return JSON.parse(await cli(["factory", "status", "--json"])) as Status;
}

/** Mounts whose source or target lies under the test root. */
async function mountsUnderRoot(): Promise<string[]> {
  return (await readFile("/proc/self/mountinfo", "utf8")).split("\n").filter((l) => l.includes(root));
}

/** Hostname and 32 random bytes, read in the guest in one short exec. */
async function probe(sb: Sandbox): Promise<{ hostname: string; random: string }> {
  const script = "hostname; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo";
  const out = await (await sb.exec({ process: { args: ["sh", "-c", script] }, inGuest: true })).output();
  expect(out.exit.exitCode).toBe(0);
  const [hostname, random] = out.stdout.toString().trim().split("\n");
  return { hostname: hostname!, random: random! };
}

async function cloneRuns(id: string): Promise<void> {
  const sb = await runtime.createSandbox({ id, process: { args: ["sh", "-c", "echo clone-ok"] } });
  expect(sb.config.hypervisorConfig.bootFromTemplate).toBe(true);
  const out = await (await sb.start({ attach: {} }))!.output();
  expect(out.stdout.toString()).toBe("clone-ok\n");
  expect(out.exit.exitCode).toBe(0);
  await sb.delete({ force: true });
}

describe("VM templates (factory) on real QEMU VMs", () => {
  it("two processes initialising the factory at once build one template", async () => {
    const [a, b] = await Promise.all([
      cli(["factory", "init", "--json"]),
      cli(["factory", "init", "--json"]),
    ]);
    const ma = JSON.parse(a) as { key: string; createdAt: string; stateBytes: number };
    const mb = JSON.parse(b) as { key: string; createdAt: string };
    // The second waited for the first's lock and took its template instead of building another.
    expect(mb).toEqual(ma);
    expect(ma.stateBytes).toBeGreaterThan(0);
    const s = await status();
    expect(s).toMatchObject({ exists: true, matches: true, meta: { key: ma.key } });
    expect(
      (await entriesUnder(path.dirname(runtime.factory.template.dir))).map((e) => e.path).sort(),
    ).toEqual(
      ["memory", "state", "template.json"]
        .map((f) => path.join(runtime.factory.template.dir, f))
        .concat(runtime.factory.template.dir)
        .sort(),
    );
  });

  it("three clones at once: own hostnames, own random bytes, the host's clock; a container runs in one", async () => {
    const ids = ["clone-a", "clone-b", "clone-c"];
    const sandboxes: Sandbox[] = [];
    try {
      for (const id of ids) {
        sandboxes.push(
          await runtime.createSandbox({
            id,
            ...(id === "clone-c"
              ? {
                  containers: [
                    {
                      id: "box",
                      rootfs: { type: "dir", path: rootfsDir },
                      process: { args: ["sleep", "600"] },
                    },
                  ],
                }
              : { process: { args: ["sleep", "600"] } }),
          }),
        );
        // The template was saved a while ago: without the clock shift the clone would be behind.
        // Read at once: a guest clock under TCG runs slow while the host is loaded (measured
        // 0.15-0.45 s per second with several VMs on 2 CPUs, cold boots as much as clones), so
        // a later reading says more about the host's load than about the shift.
        const before = Date.now();
        const clock = await (await sandboxes.at(-1)!.agent()).call("guest.clock", {});
        const after = Date.now();
        expect(clock.realtimeMs).toBeGreaterThan(before - 1000);
        expect(clock.realtimeMs).toBeLessThan(after + 1000);
      }
      expect(sandboxes.every((sb) => sb.config.hypervisorConfig.bootFromTemplate)).toBe(true);
      await Promise.all(sandboxes.map((sb) => sb.start({ keepRunning: true })));

      const seen = [];
      for (const sb of sandboxes) {
        seen.push(await probe(sb));
      }
      expect(seen.map((p) => p.hostname)).toEqual(ids);
      for (const p of seen) expect(p.random).toMatch(/^[0-9a-f]{64}$/);
      // Without the re-keyed CRNG every clone would read its template's random stream.
      expect(new Set(seen.map((p) => p.random)).size).toBe(3);

      // The container's rootfs went in as a disk hot-plugged after the restore.
      const boxed = sandboxes[2]!;
      const inBox = await (
        await boxed.exec({ process: { args: ["sh", "-c", "echo in-box; hostname"] } })
      ).output();
      expect(inBox.stdout.toString()).toBe("in-box\nclone-c\n");
    } finally {
      for (const sb of sandboxes) await sb.delete({ force: true }).catch(() => undefined);
    }
    // Sandboxes from clones leave nothing after rm.
    expect(await runtime.listSandboxes()).toEqual([]);
    // Sandboxes live under <root>/run/vm (src/store/paths.ts): that is where a leak would show.
    for (const name of ids) expect(await entriesUnder(path.join(root, "run", "vm", name))).toEqual([]);
    expect(await processesMentioning(path.join(root, "run", "vm"))).toEqual([]);
    expect(await mountsUnderRoot()).toEqual([]);
  });

  it("a template with damaged or deleted files is rebuilt, never half-restored", async () => {
    const t = runtime.factory.template;
    const before = await status();
    await truncate(t.statePath, 100);
    expect((await status()).exists).toBe(false);
    await rm(t.memoryPath);
    expect((await status()).exists).toBe(false);
    await cloneRuns("after-damage");
    const after = await status();
    expect(after).toMatchObject({ exists: true, matches: true, meta: { key: before.meta!.key } });
    expect(after.meta!.createdAt).not.toBe(before.meta!.createdAt);
  });

  it("the template is rebuilt after the rootfs changes (key mismatch)", async () => {
    const before = await status();
    const later = new Date(Date.now() + 60_000);
    await utimes(guestImage, later, later);
    const stale = await status();
    expect(stale).toMatchObject({ exists: true, matches: false });
    expect(stale.currentKey).not.toBe(before.meta!.key);
    await cloneRuns("after-rootfs-change");
    const after = await status();
    expect(after).toMatchObject({ exists: true, matches: true, meta: { key: stale.currentKey } });
  });

  it("factory destroy leaves no file, process or mount", async () => {
    const out = JSON.parse(await cli(["factory", "destroy", "--json"])) as { removed: boolean };
    expect(out.removed).toBe(true);
    expect(await entriesUnder(path.join(root, "factory"))).toEqual([]);
    expect(await processesMentioning(root)).toEqual([]);
    expect(await mountsUnderRoot()).toEqual([]);
    expect((await status()).exists).toBe(false);
    expect(JSON.parse(await cli(["factory", "destroy", "--json"]))).toEqual({ removed: false, clones: 0 });
  });
});
