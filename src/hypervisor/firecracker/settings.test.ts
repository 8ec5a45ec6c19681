import { describe, expect, it } from "vitest";
import {
  DEFAULT_FIRECRACKER_SETTINGS,
  firecrackerSettingsFromParams,
  firecrackerSettingsToParams,
} from "./settings.js";

describe("Firecracker driver settings (hypervisorParams)", () => {
  it("round-trips, omitting defaults", () => {
    expect(firecrackerSettingsToParams(DEFAULT_FIRECRACKER_SETTINGS)).toEqual([]);
    const s = {
      jailerUid: 1234,
      jailerGid: 100,
      jailerCgroupVersion: 1 as const,
      jailResources: "bind" as const,
      balloon: true,
    };
    expect(firecrackerSettingsFromParams(firecrackerSettingsToParams(s))).toEqual(s);
  });

  it("refuses unknown keys and bad values, naming the config key", () => {
    expect(() => firecrackerSettingsFromParams([{ key: "seccomp_level", value: "2" }])).toThrow(
      /no hypervisor parameter "seccomp_level=2"/,
    );
    expect(() => firecrackerSettingsFromParams([{ key: "jailer_uid", value: "-1" }])).toThrow(
      /jailer_uid must be a 32-bit unsigned integer/,
    );
    expect(() => firecrackerSettingsFromParams([{ key: "jailer_cgroup_version", value: "3" }])).toThrow(
      /must be 1 or 2/,
    );
    expect(() => firecrackerSettingsFromParams([{ key: "jail_resources", value: "symlink" }])).toThrow(
      /auto, bind, link, copy/,
    );
    expect(() => firecrackerSettingsFromParams([{ key: "balloon", value: "yes" }])).toThrow(
      /balloon must be true or false/,
    );
  });
});
