import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { launchInNetns, requireNetns } from "./netns-launch.js";

describe("launchInNetns", () => {
  it("wraps the VMM in nsenter --net=PATH --, and leaves it alone without a namespace", () => {
    const vmm = { file: "/usr/bin/acrn-dm", args: ["-U", "u", "vm"] };
    expect(launchInNetns(vmm, "/var/run/netns/cocoon-1-sb")).toEqual({
      file: "nsenter",
      args: ["--net=/var/run/netns/cocoon-1-sb", "--", "/usr/bin/acrn-dm", "-U", "u", "vm"],
    });
    expect(launchInNetns(vmm, undefined)).toBe(vmm);
  });
});

describe("requireNetns", () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it("accepts a namespace handle (this process's own, on nsfs)", async () => {
    await expect(requireNetns(`/proc/${process.pid}/ns/net`, "acrn-dm")).resolves.toBeUndefined();
  });

  it("refuses a missing path and a plain file with ERR_INVALID_ARGUMENT naming the path", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "cnl-"));
    dirs.push(dir);
    const missing = path.join(dir, "gone");
    await expect(requireNetns(missing, "acrn-dm")).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: `acrn-dm cannot join the network namespace ${missing}: it does not exist`,
      details: { netns: missing },
    });
    const file = path.join(dir, "stale");
    await writeFile(file, "");
    await expect(requireNetns(file, "Firecracker")).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: expect.stringMatching(/not a namespace handle/),
    });
  });
});
