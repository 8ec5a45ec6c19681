import { describe, expect, it } from "vitest";
import { cidrsOverlap, cidrContains, parseCidr } from "./cidr.js";
import { egressRuleset, parseEgressRule } from "./egress.js";
import { checkPortClashes, parsePortSpec } from "./ports.js";
import { parseScan } from "./scan.js";
import { parseProcRoutes } from "../guest/agent/network.js";
import { networkSpecFrom } from "../cli/commands/network.js";
import { validateNetworkSpec } from "../sandbox/network.js";
import { buildQemuArgs, type QemuVmSpec } from "../vmm/qemu/cmdline.js";
import { checkNetDevice, coldNic } from "../hypervisor/qemu/nics.js";

describe("CIDR blocks", () => {
  it("parses, normalises and compares blocks", () => {
    expect(parseCidr("10.88.0.0/16").text).toBe("10.88.0.0/16");
    expect(parseCidr("192.0.2.7").text).toBe("192.0.2.7/32");
    expect(cidrContains(parseCidr("10.88.0.0/16"), "10.88.3.4")).toBe(true);
    expect(cidrContains(parseCidr("10.88.0.0/16"), "10.89.0.1")).toBe(false);
    expect(cidrsOverlap(parseCidr("10.0.0.0/8"), parseCidr("10.88.0.0/16"))).toBe(true);
    expect(cidrsOverlap(parseCidr("10.87.0.0/16"), parseCidr("10.88.0.0/16"))).toBe(false);
  });
  it("refuses malformed blocks and host bits past the prefix, saying which", () => {
    expect(() => parseCidr("10.0.0.0/33")).toThrow(/invalid CIDR/);
    expect(() => parseCidr("300.1.1.1/8")).toThrow(/invalid CIDR/);
    expect(() => parseCidr("10.1.2.3/16")).toThrow(/did you mean 10.1.0.0\/16/);
  });
});

describe("published ports (-p)", () => {
  it("parses docker's forms", () => {
    expect(parsePortSpec("8080:80")).toEqual({ hostPort: 8080, containerPort: 80, protocol: "tcp" });
    expect(parsePortSpec("127.0.0.1:5353:53/udp")).toEqual({
      hostIP: "127.0.0.1",
      hostPort: 5353,
      containerPort: 53,
      protocol: "udp",
    });
  });
  it.each(["80", "0:80", "8080:70000", "x:8080:80", "8080:80/sctp", "1:2:3:4"])("refuses %s", (spec) => {
    expect(() => parsePortSpec(spec)).toThrow(/-p|port/);
  });
  it("refuses the same host port twice", () => {
    expect(() => checkPortClashes([parsePortSpec("8080:80"), parsePortSpec("8080:81")])).toThrow(/twice/);
    expect(() => checkPortClashes([parsePortSpec("8080:80"), parsePortSpec("8080:80/udp")])).not.toThrow();
  });
});

describe("egress rules", () => {
  it("parses CIDR[:PORT] and refuses the rest", () => {
    expect(parseEgressRule("10.1.0.0/16")).toMatchObject({ cidr: { text: "10.1.0.0/16" } });
    expect(parseEgressRule("192.0.2.7:443")).toMatchObject({ cidr: { text: "192.0.2.7/32" }, port: 443 });
    expect(() => parseEgressRule("example.com")).toThrow(/CIDR\[:PORT\]/);
    expect(() => parseEgressRule("10.0.0.0/8:0")).toThrow(/port/);
  });
  it("forwards only what the policy allows, then drops", () => {
    const text = egressRuleset(
      "tap0_cocoon",
      "eth0",
      { mode: "deny", allow: [parseEgressRule("10.99.0.1/32:8080")] },
      ["10.99.0.53"],
    );
    expect(text).toContain('type filter hook ingress device "tap0_cocoon" priority 0; policy drop;');
    expect(text).toContain('ip daddr 10.99.0.1/32 tcp dport 8080 fwd to "eth0"');
    expect(text).toContain('ip daddr 10.99.0.53 udp dport 53 fwd to "eth0"');
    expect(text.trim().split("\n").at(-3)).toBe("    counter drop");
  });
});

describe("namespace scans", () => {
  it("keeps ethernet interfaces with their MAC, MTU and global addresses; skips lo and cocoon's taps", () => {
    const addr = JSON.stringify([
      { ifname: "lo", link_type: "loopback", address: "00:00:00:00:00:00", mtu: 65536, addr_info: [] },
      {
        ifname: "eth0",
        link_type: "ether",
        address: "aa:bb:cc:dd:ee:01",
        mtu: 1450,
        linkinfo: { info_kind: "veth" },
        addr_info: [
          { family: "inet", local: "10.88.0.2", prefixlen: 16, scope: "global" },
          { family: "inet6", local: "fe80::1", prefixlen: 64, scope: "link" },
        ],
      },
      {
        ifname: "tap0_cocoon",
        link_type: "ether",
        address: "aa:bb:cc:dd:ee:02",
        linkinfo: { info_kind: "tun" },
      },
    ]);
    const route = JSON.stringify([
      { dst: "default", gateway: "10.88.0.1", dev: "eth0" },
      { dst: "10.88.0.0/16", dev: "eth0", scope: "link", prefsrc: "10.88.0.2" },
      { dst: "10.1.0.0/16", dev: "tap0_cocoon" },
    ]);
    const scan = parseScan(addr, route);
    expect(scan.interfaces).toEqual([
      { name: "eth0", mac: "aa:bb:cc:dd:ee:01", mtu: 1450, addresses: ["10.88.0.2/16"], kind: "veth" },
    ]);
    expect(scan.routes).toEqual([
      { dest: "default", gateway: "10.88.0.1", device: "eth0" },
      { dest: "10.88.0.0/16", device: "eth0", scope: "link", source: "10.88.0.2" },
    ]);
  });
});

describe("the guest's route table", () => {
  it("reads /proc/net/route: gateway routes are cocoon's, link routes the kernel's", () => {
    const text = [
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT",
      "eth0\t00000000\t0100580A\t0003\t0\t0\t0\t00000000\t0\t0\t0",
      "eth0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0",
    ].join("\n");
    expect(parseProcRoutes(text)).toEqual([
      { dest: "default", device: "eth0", gateway: "10.88.0.1", kernel: false },
      { dest: "10.88.0.0/16", device: "eth0", scope: "link", kernel: true },
    ]);
  });
});

describe("network flags", () => {
  it("defaults to the bridge on QEMU (none elsewhere), or COCOON_NETWORK", () => {
    const flags = { publish: [], dns: [], addHost: [], allowEgress: [] };
    const saved = process.env.COCOON_NETWORK;
    delete process.env.COCOON_NETWORK;
    try {
      expect(networkSpecFrom(flags, "qemu").mode).toBe("bridge");
      expect(networkSpecFrom(flags, "mock").mode).toBe("none");
      expect(networkSpecFrom(flags, "firecracker").mode).toBe("none");
      process.env.COCOON_NETWORK = "none";
      expect(networkSpecFrom(flags, "qemu").mode).toBe("none");
    } finally {
      if (saved === undefined) delete process.env.COCOON_NETWORK;
      else process.env.COCOON_NETWORK = saved;
    }
    expect(networkSpecFrom({ ...flags, network: "ns:/run/netns/x" }, "qemu")).toMatchObject({
      mode: "ns",
      nsPath: "/run/netns/x",
    });
    expect(networkSpecFrom({ ...flags, network: "bridge", addHost: ["db:10.0.0.5"] }, "qemu").hosts).toEqual([
      { name: "db", ip: "10.0.0.5" },
    ]);
  });
  it("refuses contradictions before anything is made", () => {
    expect(() =>
      networkSpecFrom({ publish: [], dns: [], addHost: [], allowEgress: [], network: "host" }, "qemu"),
    ).toThrow(/bridge, none or ns:PATH/);
    expect(() => validateNetworkSpec({ mode: "none", ports: [parsePortSpec("8080:80")] })).toThrow(/bridge/);
    expect(() => validateNetworkSpec({ mode: "bridge", allowEgress: ["10.0.0.0/8"] })).toThrow(
      /--egress deny/,
    );
    expect(() =>
      validateNetworkSpec({ mode: "bridge", egress: "deny", allowEgress: ["10.0.0.1/8"] }),
    ).toThrow(/did you mean/);
    expect(() => validateNetworkSpec({ mode: "ns" })).toThrow(/PATH/);
  });
});

describe("QEMU NICs", () => {
  const spec = (type: "microvm" | "q35"): QemuVmSpec => ({
    name: "n",
    machine: { type, accel: "tcg" },
    cpu: { model: "max" },
    smp: { cpus: 1, maxCpus: 1 },
    memory: { sizeMiB: 256 },
    kernel: { path: "/k", append: "" },
    drives: [],
    serialPorts: [],
    console: { socketPath: "/c.sock", logFile: "/c.log" },
    qmpSocket: "/q.sock",
    pidFile: "/p",
    nics: [
      coldNic({ type: "net", id: "tap0-cocoon", tapName: "tap0_cocoon", mac: "aa:bb:cc:dd:ee:01" }, false),
    ],
  });
  it("opens the tap by name (no scripts, no vhost under TCG): mmio on microvm, PCI on q35", () => {
    for (const [type, device] of [
      ["microvm", "virtio-net-device"],
      ["q35", "virtio-net-pci"],
    ] as const) {
      const args = buildQemuArgs(spec(type));
      const i = args.indexOf("-netdev");
      expect(args.slice(i, i + 4)).toEqual([
        "-netdev",
        "tap,id=net-tap0-cocoon,ifname=tap0_cocoon,script=no,downscript=no,vhost=off",
        "-device",
        `${device},id=dev-net-tap0-cocoon,netdev=net-tap0-cocoon,mac=aa:bb:cc:dd:ee:01`,
      ]);
    }
  });
  it("refuses a malformed NIC before QEMU sees it", () => {
    expect(() => checkNetDevice({ type: "net", id: "a", tapName: "tap0_cocoon", mac: "zz" })).toThrow(/MAC/);
    expect(() => checkNetDevice({ type: "net", id: "a", tapName: "a,b", mac: "aa:bb:cc:dd:ee:01" })).toThrow(
      /tap name/,
    );
  });
});
