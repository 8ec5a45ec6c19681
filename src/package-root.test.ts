import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { COCOON_VERSION, FROM_SOURCE, PACKAGE_ROOT, packagePath, programScript } from "./package-root.js";

describe("package root", () => {
  it("is the directory of cocoon's package.json, found from the sources", async () => {
    expect(PACKAGE_ROOT).toBe(path.resolve(import.meta.dirname, ".."));
    const pkg = JSON.parse(await readFile(packagePath("package.json"), "utf8")) as { version: string };
    expect(COCOON_VERSION).toBe(pkg.version);
    expect(FROM_SOURCE).toBe(true);
  });
});

describe("programScript", () => {
  let root: string | undefined;
  afterEach(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  async function tree(files: Record<string, number>): Promise<string> {
    root = await mkdtemp(path.join(os.tmpdir(), "cocoon-pkgroot-"));
    for (const [file, mtimeSec] of Object.entries(files)) {
      const full = path.join(root, file);
      await mkdir(path.dirname(full), { recursive: true });
      await writeFile(full, "");
      await utimes(full, mtimeSec, mtimeSec);
    }
    return root;
  }

  it("runs the bundle when it is no older than tsc's output", async () => {
    const r = await tree({ "dist/monitor/main.js": 1000, "dist/bundle/monitor.js": 1001 });
    expect(programScript("monitor", "monitor/main.js", r)).toBe(path.join(r, "dist/bundle/monitor.js"));
  });

  it("runs tsc's output when the bundle is older (a `tsc` alone since) or missing", async () => {
    let r = await tree({ "dist/monitor/main.js": 1000, "dist/bundle/monitor.js": 999 });
    expect(programScript("monitor", "monitor/main.js", r)).toBe(path.join(r, "dist/monitor/main.js"));
    await rm(r, { recursive: true });
    r = await tree({ "dist/monitor/main.js": 1000 });
    expect(programScript("monitor", "monitor/main.js", r)).toBe(path.join(r, "dist/monitor/main.js"));
  });
});
