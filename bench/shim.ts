/**
 * Shim benchmark: `ctr run --rm … true` through containerd-shim-cocoon-v1 (a private Debian
 * containerd 1.6, the test's busybox image) against `cocoon run --rm --rootfs <same busybox> -- true`,
 * interleaved in the same run: the shim's overhead on top of cocoon itself. containerd's own
 * `io.containerd.runc.v2` (no VM) is measured too, for context.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { PrivateContainerd } from "../test/helpers/containerd.js";
import { ASSETS_DIR, guestAssets, testRoot } from "../test/helpers/env.js";
import { busyboxRootfs } from "../test/helpers/rootfs.js";
import { compare, type Comparison } from "./lib.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const child = spawn(cmd, args, { env, stdio: "ignore" });
    child.once("exit", (code) =>
      code === 0
        ? resolve(performance.now() - t)
        : reject(new Error(`${cmd} ${args.join(" ")} exited ${code}`)),
    );
  });
}

export async function runShimBench(): Promise<Comparison[]> {
  await guestAssets();
  const { root, cleanup } = await testRoot();
  const env = {
    COCOON_ROOT: root,
    COCOON_ASSETS: ASSETS_DIR,
    COCOON_CONFIG: "",
    COCOON_SHIM_SOCKET_DIR: `${root}/s`,
  };
  const ctd = await PrivateContainerd.start(env);
  try {
    const image = await ctd.importBusybox();
    const rootfs = await busyboxRootfs(path.join(root, "bb"));
    const ctrRun = (runtime: string, id: string) =>
      timed(
        "ctr",
        ["--address", ctd.address, "run", "--rm", "--runtime", runtime, image, id, "true"],
        ctd.env,
      );
    const cocoonRun = () =>
      timed(
        process.execPath,
        [
          path.resolve(import.meta.dirname, "../bin/cocoon.js"),
          "run",
          "--rm",
          "--rootfs",
          rootfs,
          "--",
          "true",
        ],
        { ...process.env, ...env },
      );
    const shim: number[] = [];
    const cli: number[] = [];
    const runc: number[] = [];
    await ctrRun("io.containerd.cocoon.v1", "warm"); // warm-up: page cache, first containerd snapshot
    for (let i = 0; i < ROUNDS; i++) {
      process.stderr.write(`  shim round ${i + 1}/${ROUNDS}\n`);
      shim.push(await ctrRun("io.containerd.cocoon.v1", `b${i}`));
      cli.push(await cocoonRun());
      runc.push(await ctrRun("io.containerd.runc.v2", `r${i}`));
    }
    return [
      compare(
        "`ctr run --rm … true` through the shim vs `cocoon run --rm --rootfs … -- true`",
        "ms",
        ["ctr + containerd-shim-cocoon-v1", shim],
        ["cocoon run (CLI)", cli],
        "same VM config and busybox rootfs; goal ≤ 1.1",
      ),
      compare(
        "`ctr run --rm … true`: cocoon's shim vs containerd's runc shim (context: no VM)",
        "ms",
        ["ctr + containerd-shim-cocoon-v1", shim],
        ["ctr + io.containerd.runc.v2", runc],
      ),
    ];
  } finally {
    await ctd.stop();
    await cleanup();
  }
}
