import { describe, expect, it } from "vitest";
import { PlaceholderPool, guestDiskPath } from "./block-pool.js";

describe("ACRN placeholder drive pool", () => {
  it("hands out the lowest free index, then refuses when all eight are used", () => {
    const pool = new PlaceholderPool();
    expect([1, 2, 3, 4, 5, 6, 7, 8].map(() => pool.take())).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(() => pool.take()).toThrow(
      expect.objectContaining({ code: "ERR_RESOURCE_EXHAUSTED", message: expect.stringContaining("all 8") }),
    );
  });

  it("validates a requested index: not the image, not past the pool, not taken", () => {
    const pool = new PlaceholderPool(8, [3]);
    expect(() => pool.take(0)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: expect.stringContaining("VM image") }),
    );
    expect(() => pool.take(9)).toThrow(
      expect.objectContaining({
        code: "ERR_INVALID_ARGUMENT",
        message: expect.stringContaining("past ACRN's pool of 8"),
      }),
    );
    expect(() => pool.take(-1)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => pool.take(1.5)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => pool.take(3)).toThrow(
      expect.objectContaining({
        code: "ERR_INVALID_STATE",
        message: expect.stringContaining("cannot replace"),
      }),
    );
    expect(pool.take(8)).toBe(8);
    expect(pool.take()).toBe(1);
    expect(pool.used()).toEqual([1, 3, 8]);
  });

  it("takes an index back only when asked (a failed attach)", () => {
    const pool = new PlaceholderPool();
    const i = pool.take();
    pool.putBack(i);
    expect(pool.take()).toBe(i);
  });

  it("refuses a persisted index outside the pool", () => {
    expect(() => new PlaceholderPool(8, [12])).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }),
    );
  });

  it("names disks the way the guest kernel does", () => {
    expect([0, 1, 8, 25, 26, 27, 51, 52].map(guestDiskPath)).toEqual([
      "/dev/vda",
      "/dev/vdb",
      "/dev/vdi",
      "/dev/vdz",
      "/dev/vdaa",
      "/dev/vdab",
      "/dev/vdaz",
      "/dev/vdba",
    ]); // the same scheme as sd_format_disk_name
  });
});
