import { expect, it } from "vitest";
import { Code, TtrpcError } from "./ttrpc/status.js";
import { vmSizeForUpdate } from "./update.js";

const base = { vcpus: 1, memoryMB: 2048 };
const json = (v: unknown) => Buffer.from(JSON.stringify(v));

it("adds the task's CPU and memory limits to the configured size", () => {
  expect(
    vmSizeForUpdate(json({ cpu: { quota: 200000, period: 100000 }, memory: { limit: 2 ** 30 } }), base),
  ).toEqual({
    cpus: 3,
    memoryMB: 3072,
  });
  expect(vmSizeForUpdate(json({ memory: { limit: 1 } }), base)).toEqual({ memoryMB: 2049 });
});

it("changes nothing for unlimited or absent figures", () => {
  expect(vmSizeForUpdate(undefined, base)).toBeUndefined();
  expect(vmSizeForUpdate(json({}), base)).toBeUndefined();
  expect(
    vmSizeForUpdate(json({ cpu: { quota: -1, period: 100000 }, memory: { limit: -1 } }), base),
  ).toBeUndefined();
  expect(vmSizeForUpdate(json({ cpu: { shares: 1024 } }), base)).toBeUndefined();
});

it("refuses what is not LinuxResources JSON with InvalidArgument", () => {
  for (const bad of [Buffer.from("{"), json({ memory: { limit: "1G" } }), json({ cpu: { period: -5 } })]) {
    const err = (() => {
      try {
        vmSizeForUpdate(bad, base);
      } catch (e) {
        return e;
      }
    })() as TtrpcError;
    expect(err).toBeInstanceOf(TtrpcError);
    expect(err.code).toBe(Code.invalidArgument);
  }
});
