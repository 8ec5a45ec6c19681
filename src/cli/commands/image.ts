import type { Command } from "commander";
import { ConfigError } from "../../errors.js";
import { AssetCatalog, type AssetKind } from "../../guest/image/catalog.js";
import { buildGuestImages } from "../../guest/image/build.js";
import type { Runner } from "../main.js";
import { table } from "../output.js";

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

export function registerImage(program: Command, run: Runner): void {
  const image = program.command("image").description("build and manage guest kernels and root filesystems");

  image
    .command("build")
    .description("build the guest kernel and rootfs (cached by content: a second run is a no-op)")
    .option("--force", "rebuild even when the cached assets are current")
    .option("--jobs <n>", "parallel make jobs for the kernel (default: CPU count)", (v) =>
      Number.parseInt(v, 10),
    )
    .action((opts: { force?: boolean; jobs?: number }) =>
      run(async (ctx) => {
        if (opts.jobs !== undefined && (!Number.isInteger(opts.jobs) || opts.jobs < 1)) {
          throw new ConfigError("ERR_INVALID_ARGUMENT", "--jobs must be a positive integer");
        }
        const result = await buildGuestImages({
          assetsDir: ctx.paths.assetsDir,
          force: opts.force,
          ...(opts.jobs ? { jobs: opts.jobs } : {}),
          onProgress: (e) => {
            ctx.logger.info({ asset: e.asset, step: e.step }, e.message);
            if (!ctx.json) ctx.io.err(e.message);
          },
        });
        if (ctx.json) {
          ctx.io.out(
            JSON.stringify({ kernel: result.kernel, rootfs: result.rootfs, assets: result.assets }, null, 2),
          );
        } else {
          ctx.io.out(`kernel  ${result.assets.kernel}${result.kernel.built ? "" : " (cached)"}`);
          ctx.io.out(`rootfs  ${result.assets.rootfs}${result.rootfs.built ? "" : " (cached)"}`);
        }
        return 0;
      }),
    );

  image
    .command("ls")
    .description("list built guest assets")
    .action(() =>
      run(async (ctx) => {
        const catalog = new AssetCatalog(ctx.paths.assetsDir);
        const list = await catalog.list();
        const current = await catalog.current().catch(() => undefined);
        if (ctx.json) {
          ctx.io.out(
            JSON.stringify({ dir: ctx.paths.assetsDir, current: current ?? null, assets: list }, null, 2),
          );
          return 0;
        }
        if (list.length === 0) {
          ctx.io.out(`no guest assets in ${ctx.paths.assetsDir} (build them with: cocoon image build)`);
          return 0;
        }
        ctx.io.out(
          table(
            ["KIND", "KEY", "SIZE", "CREATED", "CURRENT"],
            list.map((m) => [
              m.kind,
              m.key,
              mib(Object.values(m.files).reduce((a, f) => a + f.size, 0)),
              m.createdAt.replace("T", " ").slice(0, 19),
              current?.[m.kind] === m.key ? "*" : "",
            ]),
          ),
        );
        return 0;
      }),
    );

  image
    .command("rm")
    .description("remove built guest assets by key")
    .argument("<key...>", "asset keys (see cocoon image ls)")
    .option("--force", "also remove the current assets")
    .action((keys: string[], opts: { force?: boolean }) =>
      run(async (ctx) => {
        const catalog = new AssetCatalog(ctx.paths.assetsDir);
        const list = await catalog.list();
        for (const key of keys) {
          const matches = list.filter((m) => m.key === key);
          if (matches.length === 0) throw new ConfigError("ERR_NOT_FOUND", `no guest asset with key ${key}`);
          for (const m of matches) {
            await catalog.remove(m.kind as AssetKind, m.key, opts.force);
            if (!ctx.json) ctx.io.out(`removed ${m.kind} ${m.key}`);
          }
        }
        return 0;
      }),
    );

  image
    .command("prune")
    .description("remove every guest asset that is not current")
    .action(() =>
      run(async (ctx) => {
        const catalog = new AssetCatalog(ctx.paths.assetsDir);
        const current = await catalog.current().catch(() => undefined);
        let removed = 0;
        for (const m of await catalog.list()) {
          if (current?.[m.kind as AssetKind] === m.key) continue;
          await catalog.remove(m.kind as AssetKind, m.key);
          removed++;
          if (!ctx.json) ctx.io.out(`removed ${m.kind} ${m.key}`);
        }
        if (ctx.json) ctx.io.out(JSON.stringify({ removed }));
        else if (removed === 0) ctx.io.out("nothing to prune");
        return 0;
      }),
    );
}
