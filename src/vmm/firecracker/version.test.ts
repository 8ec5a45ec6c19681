import { describe, expect, it } from "vitest";
import { atLeast, compareVersions, formatVersion, parseVersion, tryParseVersion } from "./version.js";

describe("versions", () => {
  it("reads the versions Firecracker reports", () => {
    expect(formatVersion(parseVersion("1.0.0-44-gc73a27cb-dirty"))).toBe("1.0.0");
    expect(parseVersion("Firecracker v1.16.1\n").minor).toBe(16);
    expect(tryParseVersion("no version")).toBeUndefined();
    expect(() => parseVersion("garbage")).toThrow(/cannot read a Firecracker version/);
  });

  it("compares numerically, ignoring suffixes", () => {
    expect(compareVersions("1.10.0", "1.9.9")).toBeGreaterThan(0);
    expect(compareVersions("1.0.0-44-gabc", "1.0.0")).toBe(0);
    expect(atLeast(parseVersion("1.6.0"), "1.6.0")).toBe(true);
    expect(atLeast(parseVersion("1.5.9"), "1.6.0")).toBe(false);
  });
});
