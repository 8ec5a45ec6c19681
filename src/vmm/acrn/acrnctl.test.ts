import { describe, expect, it } from "vitest";
import { blkrescan, blkrescanArgs } from "./acrnctl.js";

describe("acrnctl blkrescan", () => {
  it("builds `blkrescan <vm> <slot>,<file>[,ro]`", () => {
    expect(blkrescanArgs({ vmName: "sandbox-a", slot: 5, file: "/dev/dm-3" })).toEqual([
      "blkrescan",
      "sandbox-a",
      "5,/dev/dm-3",
    ]);
    expect(blkrescanArgs({ vmName: "sandbox-a", slot: 12, file: "/x/rootfs.img", readOnly: true })).toEqual([
      "blkrescan",
      "sandbox-a",
      "12,/x/rootfs.img,ro",
    ]);
  });

  it.each<[string, Parameters<typeof blkrescanArgs>[0], RegExp]>([
    ["an empty path", { vmName: "v", slot: 5, file: "" }, /path is empty/],
    ["a relative path", { vmName: "v", slot: 5, file: "disk.img" }, /absolute/],
    ["a path with a comma", { vmName: "v", slot: 5, file: "/a,b" }, /','/],
    ["a path acrn-dm takes for a placeholder", { vmName: "v", slot: 5, file: "/tmp/nodisk.img" }, /nodisk/],
    ["the GVT-g slot", { vmName: "v", slot: 2, file: "/d" }, /slot 2/],
    ["a slot past the bus", { vmName: "v", slot: 32, file: "/d" }, /slot 32/],
    ["an empty VM name", { vmName: "", slot: 5, file: "/d" }, /VM name/],
  ])("refuses %s", (_what, req, message) => {
    expect(() => blkrescanArgs(req)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: expect.stringMatching(message) }),
    );
  });

  it("reports acrnctl's refusal with its message", async () => {
    // /bin/false stands in for an acrnctl that refuses; the fake acrnctl is exercised in test/contract/acrn.
    await expect(blkrescan("/bin/false", { vmName: "v", slot: 5, file: "/d" })).rejects.toMatchObject({
      code: "ERR_VMM_API",
      message: "acrnctl blkrescan v slot 5 exited with code 1",
    });
  });
});
