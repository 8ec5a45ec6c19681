import { describe, expect, it } from "vitest";
import { macFromIp, netnsPath } from "./tap.js";

describe("network helpers", () => {
  it("derives the guest MAC from the guest IP like Firecracker's test framework", () => {
    expect(macFromIp("192.168.0.2")).toBe("06:00:C0:A8:00:02");
    expect(macFromIp("10.0.255.1")).toBe("06:00:0A:00:FF:01");
    expect(() => macFromIp("300.1.1.1")).toThrow(/not an IPv4 address/);
  });

  it("names netns handles and refuses odd names", () => {
    expect(netnsPath("cocoon-1")).toBe("/var/run/netns/cocoon-1");
    expect(() => netnsPath("../etc")).toThrow(/invalid netns name/);
  });
});
