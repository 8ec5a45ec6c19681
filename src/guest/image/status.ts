import type { HostCheck } from "../../host/report.js";
import { messageOf } from "../../errors.js";
import { AssetCatalog } from "./catalog.js";
import { assetKey } from "./common.js";
import { kernelInputs } from "./kernel.js";
import { rootfsInputs } from "./rootfs.js";

/**
 * `cocoon check` lines for the guest assets: are there current ones, and do they match what
 * the sources would build now (a stale rootfs carries an old agent).
 */
export async function guestAssetChecks(assetsDir: string): Promise<HostCheck[]> {
  const catalog = new AssetCatalog(assetsDir);
  let current;
  try {
    current = await catalog.current();
  } catch (err) {
    return [{ id: "assets", title: "Guest assets", status: "fail", detail: messageOf(err) }];
  }
  if (!current) {
    return [
      {
        id: "assets",
        title: "Guest assets",
        status: "fail",
        detail: `none in ${assetsDir}: run cocoon image build`,
      },
    ];
  }
  const checks: HostCheck[] = [];
  const expected: Record<"kernel" | "rootfs", () => Promise<string>> = {
    kernel: async () => assetKey(await kernelInputs()),
    rootfs: async () => assetKey((await rootfsInputs()).description),
  };
  for (const kind of ["kernel", "rootfs"] as const) {
    const key = current[kind];
    const present = await catalog.has(kind, key);
    let status: HostCheck["status"] = present ? "ok" : "fail";
    let detail = present
      ? `${catalog.assetDir(kind, key)}`
      : `current ${kind} ${key} is missing: run cocoon image build`;
    if (present) {
      try {
        const want = await expected[kind]();
        if (want !== key) {
          status = "warn";
          detail += ` (stale: the sources now build ${want}; run cocoon image build)`;
        }
      } catch (err) {
        detail += ` (cannot tell if it is current: ${messageOf(err)})`;
      }
    }
    checks.push({ id: `assets.${kind}`, title: `Guest ${kind}`, status, detail });
  }
  return checks;
}
