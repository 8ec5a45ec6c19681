import { describe, expect, it } from "vitest";
import {
  ACRN_BLOCK_POOL_SIZE,
  assignSlots,
  buildAcrnDmArgv,
  type AcrnDevice,
  type AcrnDmSpec,
} from "./argv.js";
import { ACRN_UUIDS } from "./uuids.js";

const VM_DIR = "/run/cocoon/vm/abc";

function sandboxDevices(extra: AcrnDevice[] = []): AcrnDevice[] {
  return [
    { kind: "hostbridge" },
    { kind: "lpc" },
    { kind: "console-port", name: "console0", socketPath: `${VM_DIR}/console.sock`, console: true },
    { kind: "virtio-blk", index: 0, file: "/var/lib/cocoon/assets/rootfs.img", readOnly: true },
    ...Array.from({ length: ACRN_BLOCK_POOL_SIZE }, (_, i): AcrnDevice => ({
      kind: "virtio-blk",
      index: i + 1,
      file: "nodisk",
    })),
    { kind: "console-port", name: "cocoon.agent.0", socketPath: `${VM_DIR}/agent.sock`, console: false },
    ...extra,
  ];
}

function spec(overrides: Partial<AcrnDmSpec> = {}): AcrnDmSpec {
  return {
    name: "sandbox-abc",
    uuid: ACRN_UUIDS[0],
    acpi: true,
    memoryMB: 2048,
    vcpus: 1,
    devices: sandboxDevices(),
    kernel: { path: "/var/lib/cocoon/assets/vmlinuz", cmdline: "console=hvc0 panic=1 maxcpus=1" },
    ...overrides,
  };
}

describe("acrn-dm argv", () => {
  it("matches the golden command line of a sandbox VM", () => {
    const { argv, blockSlots, slots } = buildAcrnDmArgv(
      spec({
        devices: sandboxDevices([
          { kind: "virtio-net", ifName: "tap0_kata", mac: "02:AA:BB:CC:DD:01", model: "tap" },
        ]),
      }),
    );
    // prettier-ignore
    expect(argv).toEqual([
      "-U", "a7ada506-1ab0-4b6b-a0da-e513ca9b8c2f",
      "-A",
      "-m", "2048M",
      "-s", "0:0,hostbridge",
      "-s", "1:0,lpc", "-l", "com1,stdio",
      "-s", "3,virtio-console,@socket:console0=/run/cocoon/vm/abc/console.sock",
      "-s", "4,virtio-blk,/var/lib/cocoon/assets/rootfs.img,ro",
      "-s", "5,virtio-blk,nodisk",
      "-s", "6,virtio-blk,nodisk",
      "-s", "7,virtio-blk,nodisk",
      "-s", "8,virtio-blk,nodisk",
      "-s", "9,virtio-blk,nodisk",
      "-s", "10,virtio-blk,nodisk",
      "-s", "11,virtio-blk,nodisk",
      "-s", "12,virtio-blk,nodisk",
      "-s", "13,virtio-console,socket:cocoon.agent.0=/run/cocoon/vm/abc/agent.sock",
      "-s", "14,virtio-net,tap0_kata,mac=02:aa:bb:cc:dd:01",
      "-k", "/var/lib/cocoon/assets/vmlinuz",
      "-B", "console=hvc0 panic=1 maxcpus=1",
      "sandbox-abc",
    ]);
    expect(slots).toEqual([0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    // prettier-ignore
    expect([...blockSlots]).toEqual([[0, 4], [1, 5], [2, 6], [3, 7], [4, 8], [5, 9], [6, 10], [7, 11], [8, 12]]);
  });

  it("passes -c only for more than one vCPU, skips -A and an empty -B", () => {
    const one = buildAcrnDmArgv(spec({ acpi: false, kernel: { path: "/k", cmdline: "" } })).argv;
    expect(one).not.toContain("-c");
    expect(one).not.toContain("-A");
    expect(one).not.toContain("-B");
    expect(one.slice(-3)).toEqual(["-k", "/k", "sandbox-abc"]);
    const two = buildAcrnDmArgv(spec({ vcpus: 2 })).argv;
    expect(two.slice(2, 7)).toEqual(["-A", "-m", "2048M", "-c", "2"]);
  });

  it("gives a macvtap its name as is", () => {
    const { argv } = buildAcrnDmArgv(
      spec({ devices: [{ kind: "virtio-net", ifName: "eth0", mac: "02:00:00:00:00:01", model: "macvtap" }] }),
    );
    expect(argv).toContain("0,virtio-net,eth0,mac=02:00:00:00:00:01");
  });

  it("never hands out slot 2 and runs out after 31 devices", () => {
    expect(assignSlots(4)).toEqual([0, 1, 3, 4]);
    expect(assignSlots(31)).toHaveLength(31);
    expect(assignSlots(31)).not.toContain(2);
    expect(() => assignSlots(32)).toThrow(expect.objectContaining({ code: "ERR_RESOURCE_EXHAUSTED" }));
  });

  it.each<[string, Partial<AcrnDmSpec>, RegExp]>([
    ["a UUID ACRN does not know", { uuid: "00000000-0000-0000-0000-000000000000" as never }, /uuid/],
    ["a VM name with a space", { name: "sandbox abc" }, /VM name/],
    ["a VM name that does not fit", { name: "x".repeat(128) }, /longer than 127/],
    ["zero memory", { memoryMB: 0 }, /memoryMB/],
    ["a relative kernel", { kernel: { path: "vmlinuz", cmdline: "" } }, /absolute/],
    ["a command line over 1023 bytes", { kernel: { path: "/k", cmdline: "a".repeat(1024) } }, /1023/],
    ["a disk path with a comma", { devices: [{ kind: "virtio-blk", index: 0, file: "/a,b" }] }, /','/],
    ["a relative disk path", { devices: [{ kind: "virtio-blk", index: 0, file: "disk.img" }] }, /absolute/],
    [
      "a socket path with a colon",
      { devices: [{ kind: "console-port", name: "p", socketPath: "/a:b", console: false }] },
      /':'/,
    ],
    [
      "a socket path over 107 bytes",
      { devices: [{ kind: "console-port", name: "p", socketPath: "/" + "s".repeat(107), console: false }] },
      /107/,
    ],
    [
      "a tap acrn-dm would not open",
      { devices: [{ kind: "virtio-net", ifName: "eth0", mac: "02:00:00:00:00:01", model: "tap" }] },
      /tap\* or vmnet\*/,
    ],
    [
      "a bad MAC",
      { devices: [{ kind: "virtio-net", ifName: "tap0", mac: "02:00:00:00:01", model: "tap" }] },
      /MAC/,
    ],
    [
      "two host bridges",
      { devices: [{ kind: "hostbridge" }, { kind: "hostbridge" }] },
      /one PCI host bridge/,
    ],
    [
      "two consoles",
      {
        devices: [
          { kind: "console-port", name: "a", socketPath: "/a", console: true },
          { kind: "console-port", name: "b", socketPath: "/b", console: true },
        ],
      },
      /only one/,
    ],
    [
      "a reused disk index",
      {
        devices: [
          { kind: "virtio-blk", index: 1, file: "nodisk" },
          { kind: "virtio-blk", index: 1, file: "/d" },
        ],
      },
      /index 1/,
    ],
    [
      "a reused socket",
      {
        devices: [
          { kind: "console-port", name: "a", socketPath: "/s", console: false },
          { kind: "console-port", name: "b", socketPath: "/s", console: false },
        ],
      },
      /socket \/s/,
    ],
  ])("refuses %s", (_what, overrides, message) => {
    expect(() => buildAcrnDmArgv(spec(overrides))).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_CONFIG", message: expect.stringMatching(message) }),
    );
  });
});
