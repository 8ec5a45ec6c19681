import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { expect, it } from "vitest";

const run = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, "../..");

// src/gen/shim is generated from Debian's containerd protos (scripts/setup.sh installs them and protoc).
it("src/gen/shim matches what scripts/gen-shim-proto.sh generates", async () => {
  const out = await mkdtemp(path.join(tmpdir(), "gen-shim-"));
  try {
    await run("bash", [path.join(REPO, "scripts/gen-shim-proto.sh"), out]);
    const diff = await run("diff", ["-r", out, path.join(REPO, "src/gen/shim")]).then(
      () => "",
      (err: { stdout?: string }) => err.stdout ?? String(err),
    );
    expect(diff).toBe("");
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
