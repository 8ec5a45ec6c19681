import { describe, expect, it } from "vitest";
import { acrnSettingsFromParams, acrnSettingsToParams } from "./settings.js";

describe("ACRN driver settings", () => {
  it("round-trips through hypervisorParams, omitting defaults", () => {
    expect(acrnSettingsToParams({ maxVms: 0, platformInfoHelper: "" })).toEqual([]);
    const params = acrnSettingsToParams({ maxVms: 3, platformInfoHelper: "/usr/libexec/h" });
    expect(params).toEqual([
      { key: "max_vms", value: "3" },
      { key: "platform_info_helper", value: "/usr/libexec/h" },
    ]);
    expect(acrnSettingsFromParams(params)).toEqual({ maxVms: 3, platformInfoHelper: "/usr/libexec/h" });
    expect(acrnSettingsFromParams([])).toEqual({ maxVms: 0, platformInfoHelper: "" });
  });

  it.each([
    [[{ key: "max_vms", value: "-1" }], /max_vms/],
    [[{ key: "max_vms", value: "two" }], /max_vms/],
    [[{ key: "platform_info_helper", value: "relative/helper" }], /absolute/],
    [[{ key: "machine", value: "q35" }], /no hypervisor parameter "machine=q35"/],
  ])("refuses %j", (params, message) => {
    expect(() => acrnSettingsFromParams(params)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_CONFIG", message: expect.stringMatching(message) }),
    );
  });
});
