import { describe, expect, it } from "vitest";
import {
  addKernelParam,
  deserializeParams,
  kernelCmdline,
  mergeParams,
  parseKernelCmdline,
  serializeParams,
} from "./params.js";

describe("kernel parameters", () => {
  it("refuses an empty key", () => {
    expect(() => addKernelParam([], { key: "", value: "1" })).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_KERNEL_PARAM" }),
    );
  });

  it("appends a valid parameter without touching the input", () => {
    const base = [{ key: "a", value: "1" }];
    const out = addKernelParam(base, { key: "quiet", value: "" });
    expect(out).toEqual([
      { key: "a", value: "1" },
      { key: "quiet", value: "" },
    ]);
    expect(base).toHaveLength(1);
  });

  it("serializes following the seed's rules", () => {
    const params = [
      { key: "", value: "" },
      { key: "key", value: "" },
      { key: "", value: "value" },
      { key: "k", value: "v" },
    ];
    expect(serializeParams(params, "=")).toEqual(["key", "value", "k=v"]);
    expect(serializeParams(params, ":")).toEqual(["key", "value", "k:v"]);
    // an empty delimiter yields key and value as two entries
    expect(serializeParams(params, "")).toEqual(["key", "value", "k", "v"]);
    expect(serializeParams([], "=")).toEqual([]);
  });

  it("deserializes splitting on the first '=' and skipping empty strings", () => {
    expect(deserializeParams(["", "a=b", "c", "d=e=f", "=x", "y="])).toEqual([
      { key: "a", value: "b" },
      { key: "c", value: "" },
      { key: "d", value: "e=f" },
      { key: "", value: "x" },
      { key: "y", value: "" },
    ]);
  });

  it("round-trips through serialize and deserialize", () => {
    const params = [
      { key: "console", value: "ttyS0" },
      { key: "quiet", value: "" },
      { key: "root", value: "/dev/vda" },
    ];
    expect(deserializeParams(serializeParams(params, "="))).toEqual(params);
  });

  it("parses and merges command lines, later keys winning in place", () => {
    const defaults = parseKernelCmdline("console=ttyS0  panic=1 quiet");
    const merged = mergeParams(defaults, [
      { key: "panic", value: "0" },
      { key: "debug", value: "" },
    ]);
    expect(kernelCmdline(merged)).toBe("console=ttyS0 panic=0 quiet debug");
  });
});
