import { readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { netnsNamePrefix } from "../../src/network/netns.js";
import { ASSETS_DIR, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";
import { TestNetns, TestNetnsView } from "../helpers/netns.js";

/**
 * Networking on real VMs: cocoon runs inside a namespace this test makes ("the host"), with an
 * HTTP server and a DNS server (dnsmasq) on a veth there (10.99.0.1, 10.99.0.2).
 * Nothing is made in, or sent to, the machine's own network.
 */

let root: string;
let cleanupRoot: () => Promise<void>;
let host: TestNetns;
let env: NodeJS.ProcessEnv;
let prefix: string;
let baseline: Awaited<ReturnType<TestNetns["traces"]>>;

const SERVER = "10.99.0.1";
const OTHER_SERVER = "10.99.0.2";

/** `ls /sys/class/net` output without the kernel's own tunnel devices (sit0 and the like). */
function nicNames(ls: string): string {
  return ls
    .split("\n")
    .filter((n) => n && !/^(sit|tunl|ip6tnl|ip_vti|ip6_vti|ip6gre|gre|gretap|erspan)\d/.test(n))
    .map((n) => `${n}\n`)
    .join("");
}

/**
 * A second interface for a running sandbox: a veth whose `eth1` end (address `sandboxAddr`) is in
 * the sandbox's namespace, ready for `network connect`, and whose host end has `hostAddrs`.
 */
async function vethIntoSandbox(
  sandboxNs: TestNetnsView,
  hostEnd: string,
  hostAddrs: string[],
  sandboxAddr: string,
): Promise<void> {
  await host.run("ip", [
    "link",
    "add",
    hostEnd,
    "type",
    "veth",
    "peer",
    "name",
    "eth1",
    "netns",
    sandboxNs.name,
  ]);
  for (const addr of hostAddrs) await host.run("ip", ["addr", "add", addr, "dev", hostEnd]);
  await host.run("ip", ["link", "set", hostEnd, "up"]);
  await sandboxNs.run("ip", ["addr", "add", sandboxAddr, "dev", "eth1"]);
}

async function leases(): Promise<string[]> {
  const files = await readdir(path.join(root, "run", "cni", "ipam", "cocoon")).catch(() => []);
  return files.filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
}

async function expectNoTraces(): Promise<void> {
  expect(await host.traces(prefix)).toEqual(baseline);
  expect(await leases()).toEqual([]);
  expect(await processesMentioning(root)).toEqual([]);
}

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  env = { COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR, COCOON_CONFIG: "" };
  prefix = netnsNamePrefix(path.join(root, "run"));
  host = await TestNetns.create();
  // The servers' addresses sit on one end of a veth pair (this kernel has no dummy interfaces).
  await host.run("ip", ["link", "add", "srv0", "type", "veth", "peer", "name", "srv0p"]);
  await host.run("ip", ["link", "set", "srv0p", "up"]);
  await host.run("ip", ["addr", "add", `${SERVER}/24`, "dev", "srv0"]);
  await host.run("ip", ["addr", "add", `${OTHER_SERVER}/24`, "dev", "srv0"]);
  await host.run("ip", ["link", "set", "srv0", "up"]);
  for (const ip of [SERVER, OTHER_SERVER])
    host.background(process.execPath, [
      "-e",
      `require("http").createServer((q, r) => r.end("hello from the host side\\n")).listen(8080, "${ip}")`,
    ]);
  host.background("dnsmasq", [
    "--keep-in-foreground",
    "--no-resolv",
    "--no-hosts",
    "--bind-interfaces",
    `--listen-address=${SERVER}`,
    `--address=/web.test/${SERVER}`,
    "--pid-file=",
  ]);
  expect(await host.httpGet(`http://${SERVER}:8080/hello.txt`, 30)).toBe("hello from the host side\n");
  // The first sandbox makes what all of them share (the cocoon0 bridge, portmap's top-level
  // chains); every later check compares against the state after it is gone.
  const first = await host.cocoon(
    [
      "run",
      "--rm",
      "--network",
      "bridge",
      // With a published port, so that portmap's shared chains exist from here on.
      "-p",
      "18089:80",
      "--dns",
      SERVER,
      "--",
      "sh",
      "-c",
      "wget -q -O - http://web.test:8080/hello.txt",
    ],
    env,
  );
  expect(first.stderr).toBe("");
  expect(first.stdout).toBe("hello from the host side\n");
  baseline = await host.traces(prefix);
  expect(baseline.netns).toEqual([]);
  expect(baseline.links.filter((l) => !["lo", "srv0", "srv0p", "cocoon0"].includes(l))).toEqual([]);
  // Only the chains portmap shares between sandboxes stay; nothing of the one that ran.
  expect(baseline.iptables).not.toMatch(/CNI-DN-|CNI-[0-9a-f]{24}/);
  expect(await leases()).toEqual([]);
}, 20 * 60_000);

afterAll(async () => {
  const ps = await host?.cocoon(["ps", "-a", "--json"], env);
  const ids = JSON.parse(ps?.stdout || "[]") as { id: string }[];
  if (ids.length) await host.cocoon(["rm", "-f", ...ids.map((s) => s.id)], env);
  await host?.destroy();
  await cleanupRoot?.();
});

describe("networking on real VMs", () => {
  it("a guest on the bridge reaches a host-side server by a name the configured DNS resolves, and --add-host", async () => {
    const r = await host.cocoon(
      [
        "run",
        "--rm",
        "--network",
        "bridge",
        "--dns",
        SERVER,
        "--add-host",
        `alias.test:${OTHER_SERVER}`,
        "--",
        "sh",
        "-c",
        "wget -q -O - http://web.test:8080/hello.txt && wget -q -O - http://alias.test:8080/hello.txt && cat /etc/resolv.conf && ls /sys/class/net",
      ],
      env,
    );
    expect(r.stderr).toBe("");
    const lines = r.stdout.split("\n");
    expect(lines.slice(0, 3).join("\n")).toBe(
      `hello from the host side\nhello from the host side\nnameserver ${SERVER}`,
    );
    expect(nicNames(lines.slice(3).join("\n"))).toBe("eth0\nlo\n");
    await expectNoTraces();
  });

  it("--network none has only loopback", async () => {
    const r = await host.cocoon(["run", "--rm", "--network", "none", "--", "ls", "/sys/class/net"], env);
    expect(nicNames(r.stdout)).toBe("lo\n");
    await expectNoTraces();
  });

  it("-p publishes a guest server on the host's 127.0.0.1 and bridge address; two sandboxes reach each other", async () => {
    const page =
      "mkdir -p /tmp/www && echo guest-page > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
    const d = await host.cocoon(
      ["run", "-d", "--name", "web", "--network", "bridge", "-p", "18080:8080", "--", "sh", "-c", page],
      env,
    );
    expect(d.stderr).toBe("");
    expect(await host.httpGet("http://127.0.0.1:18080/", 120)).toBe("guest-page\n");
    expect(await host.httpGet("http://10.88.0.1:18080/", 10)).toBe("guest-page\n");
    const addr = await host.cocoon(
      ["exec", "web", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0"],
      env,
    );
    const ip = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(addr.stdout)?.[1];
    expect(ip).toMatch(/^10\.88\./);
    const peer = await host.cocoon(
      ["run", "--rm", "--network", "bridge", "--", "wget", "-q", "-O", "-", `http://${ip}:8080/`],
      env,
    );
    expect(peer.stdout).toBe("guest-page\n");
    // stats counts the guest's traffic on its NIC (docker's NET I/O): it served three pages.
    const stats = await host.cocoon(["stats", "--no-stream", "--json", "web"], env);
    expect(stats.code, stats.stderr).toBe(0);
    const [row] = JSON.parse(stats.stdout) as { netRxBytes?: number; netTxBytes?: number }[];
    expect(row?.netRxBytes).toBeGreaterThan(0);
    expect(row?.netTxBytes).toBeGreaterThan("guest-page\n".length * 3);
    // The port is taken while "web" publishes it: one clear error, nothing made.
    const clash = await host.cocoon(
      ["run", "--rm", "--network", "bridge", "-p", "18080:80", "--", "true"],
      env,
    );
    expect(clash.code).toBe(125);
    expect(clash.stderr).toContain("host port 18080/tcp is already published by another sandbox");
    // microvm has no PCI hotplug: a clear error, before anything is made.
    const hot = await host.cocoon(["network", "connect", "web", "eth1"], env);
    expect(hot.code).not.toBe(0);
    expect(hot.stderr).toContain("cannot hot-plug network interfaces");
    expect((await host.cocoon(["rm", "-f", "web"], env)).code).toBe(0);
    await expectNoTraces();
  });

  it("--egress deny lets the guest reach only what --allow-egress names", async () => {
    const r = await host.cocoon(
      [
        "run",
        "--rm",
        "--network",
        "bridge",
        "--egress",
        "deny",
        "--allow-egress",
        `${SERVER}:8080`,
        "--",
        "sh",
        "-c",
        `wget -q -O - http://${SERVER}:8080/hello.txt; wget -q -T 5 -O - http://${OTHER_SERVER}:8080/hello.txt || echo blocked`,
      ],
      env,
    );
    expect(r.stdout).toBe("hello from the host side\nblocked\n");
    await expectNoTraces();
  });

  it("joins a namespace it is given (ns:PATH) and leaves it as it found it", async () => {
    const pod = await TestNetns.create("cct-pod");
    try {
      await host.run("ip", [
        "link",
        "add",
        "podh0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name,
      ]);
      await host.run("ip", ["addr", "add", "10.98.0.1/24", "dev", "podh0"]);
      await host.run("ip", ["link", "set", "podh0", "up"]);
      await pod.run("ip", ["addr", "add", "10.98.0.2/24", "dev", "eth0"]);
      await pod.run("ip", ["link", "set", "eth0", "up"]);
      await pod.run("ip", ["route", "add", "default", "via", "10.98.0.1"]);
      const before = await pod.traces("none");
      const r = await host.cocoon(
        [
          "run",
          "--rm",
          "--network",
          `ns:${pod.path}`,
          "--",
          "wget",
          "-q",
          "-O",
          "-",
          `http://${SERVER}:8080/hello.txt`,
        ],
        env,
      );
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("hello from the host side\n");
      expect(await pod.traces("none")).toEqual(before);
      expect(await pod.run("tc", ["filter", "show", "dev", "eth0", "ingress"])).toBe("");
    } finally {
      await host.run("ip", ["link", "del", "podh0"]).catch(() => undefined);
      await pod.destroy();
    }
    await expectNoTraces();
  });

  it("refuses bad input with one clear error each, before anything is made", async () => {
    const run = (args: string[], extra: NodeJS.ProcessEnv = {}) =>
      host.cocoon(["run", "--rm", ...args, "--", "true"], { ...env, ...extra });
    const busy = host.background(process.execPath, [
      "-e",
      "require('net').createServer().listen(18081, '127.0.0.1')",
    ]);
    try {
      let taken: string | undefined;
      for (let i = 0; i < 30 && !taken?.includes("not available"); i++) {
        taken = (await run(["--network", "bridge", "-p", "127.0.0.1:18081:80"])).stderr;
      }
      expect(taken).toContain("host port 127.0.0.1:18081/tcp is not available (EADDRINUSE)");
    } finally {
      busy.kill("SIGKILL");
    }
    expect(
      (await run(["--network", "bridge", "--egress", "deny", "--allow-egress", "10.0.0.300"])).stderr,
    ).toContain('invalid --allow-egress block "10.0.0.300"');
    expect((await run(["--network", "ns:/var/run/netns/cct-no-such-ns"])).stderr).toContain(
      "the network namespace /var/run/netns/cct-no-such-ns does not exist",
    );
    expect((await run(["--network", "bridge"], { COCOON_CNI_PATH: root })).stderr).toContain(
      'the CNI plugin "bridge" is not installed',
    );
    await host.run("ip", ["route", "add", "10.88.5.0/24", "dev", "srv0"]);
    try {
      expect((await run(["--network", "bridge"])).stderr).toContain(
        "the sandbox subnet 10.88.0.0/16 overlaps the host route 10.88.5.0/24 (dev srv0)",
      );
    } finally {
      await host.run("ip", ["route", "del", "10.88.5.0/24", "dev", "srv0"]);
    }
    expect(JSON.parse((await host.cocoon(["ps", "-a", "--json"], env)).stdout)).toEqual([]);
    await expectNoTraces();
  });

  it("hot-plugs an interface into a q35 VM and out again; an interface the agent refuses is rolled back", async () => {
    const cfg = path.join(root, "q35.toml");
    await writeFile(cfg, '[hypervisor.qemu]\nmachine_type = "q35"\n');
    const qenv = { ...env, COCOON_CONFIG: cfg };
    const d = await host.cocoon(
      ["run", "-d", "--name", "hp", "--network", "bridge", "--", "sleep", "1000"],
      qenv,
    );
    expect(d.stderr).toBe("");
    const sandboxNs = new TestNetnsView(`${prefix}hp`);
    const nics = async () =>
      nicNames((await host.cocoon(["exec", "hp", "--", "ls", "/sys/class/net"], env)).stdout);
    await vethIntoSandbox(sandboxNs, "hph1", ["10.97.0.1/24"], "10.97.0.2/24");

    const c = await host.cocoon(["network", "connect", "hp", "eth1"], env);
    expect(c.stderr).toBe("");
    expect(c.stdout).toContain("eth1");
    expect(await nics()).toBe("eth0\neth1\nlo\n");
    const ping = await host.cocoon(["exec", "hp", "--", "ping", "-c", "1", "-W", "10", "10.97.0.1"], env);
    expect(ping.stdout).toContain("1 packets received");
    expect((await host.cocoon(["network", "disconnect", "hp", "eth1"], env)).code).toBe(0);
    expect(await nics()).toBe("eth0\nlo\n");
    expect(await sandboxNs.run("tc", ["filter", "show", "dev", "eth1", "ingress"])).toBe("");

    // The agent refuses the address: the NIC, the tap and the tc filters all go again.
    const bad = await host.cocoon(["network", "connect", "hp", "eth1", "--address", "10.97.0.2/40"], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/ip addr add 10.97.0.2\/40/);
    expect(await nics()).toBe("eth0\nlo\n");
    expect(await sandboxNs.run("tc", ["filter", "show", "dev", "eth1", "ingress"])).toBe("");
    expect(await sandboxNs.run("ip", ["-o", "link", "show"])).not.toContain("tap1_cocoon");
    // ... and the sandbox takes the interface afterwards as if nothing had happened.
    expect((await host.cocoon(["network", "connect", "hp", "eth1"], env)).code).toBe(0);
    expect(await nics()).toBe("eth0\neth1\nlo\n");
    expect((await host.cocoon(["rm", "-f", "hp"], env)).code).toBe(0);
    await expectNoTraces();
  });

  it("an interface hot-plugged under --egress deny is held to the sandbox's policy", async () => {
    const cfg = path.join(root, "q35.toml");
    await writeFile(cfg, '[hypervisor.qemu]\nmachine_type = "q35"\n');
    const qenv = { ...env, COCOON_CONFIG: cfg };
    const d = await host.cocoon(
      [
        "run",
        "-d",
        "--name",
        "hpe",
        "--network",
        "bridge",
        "--egress",
        "deny",
        "--allow-egress",
        "10.98.0.1/32",
        "--",
        "sleep",
        "1000",
      ],
      qenv,
    );
    expect(d.stderr).toBe("");
    const sandboxNs = new TestNetnsView(`${prefix}hpe`);
    // Two addresses on the same host-side interface: only the policy tells them apart.
    await vethIntoSandbox(sandboxNs, "hpe1", ["10.98.0.1/24", "10.98.0.3/24"], "10.98.0.2/24");
    expect((await host.cocoon(["network", "connect", "hpe", "eth1"], env)).stderr).toBe("");
    expect(await sandboxNs.run("nft", ["list", "tables"])).toContain("cocoon_egress_tap1_cocoon");
    // busybox ping can wait past -W for a destination that never answers: timeout bounds it.
    const ping = (ip: string) =>
      host.cocoon(
        [
          "exec",
          "hpe",
          "--",
          "sh",
          "-c",
          `timeout 15 ping -c 1 -W 5 ${ip} >/dev/null 2>&1 && echo reached || echo blocked`,
        ],
        env,
      );
    expect((await ping("10.98.0.1")).stdout).toBe("reached\n");
    expect((await ping("10.98.0.3")).stdout).toBe("blocked\n");
    expect((await host.cocoon(["network", "disconnect", "hpe", "eth1"], env)).code).toBe(0);
    expect(await sandboxNs.run("nft", ["list", "tables"])).not.toContain("cocoon_egress_tap1_cocoon");
    expect((await host.cocoon(["rm", "-f", "hpe"], env)).code).toBe(0);
    await host.run("ip", ["link", "del", "hpe1"]).catch(() => undefined);
    await expectNoTraces();
  });

  it("rm -f after cocoon was SIGKILLed mid-start removes the namespace, veth, tap, rules and lease", async () => {
    const child = host.spawnCocoon(
      ["run", "-d", "--name", "killed", "--network", "bridge", "-p", "18082:80", "--", "sleep", "1000"],
      env,
    );
    // Killed once its network exists (the namespace and the lease), while the VM boots.
    for (let i = 0; i < 600 && (await leases()).length === 0; i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(await leases()).toHaveLength(1);
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    expect((await host.traces(prefix)).netns).toHaveLength(1);
    const rm = await host.cocoon(["rm", "-f", "killed"], env);
    expect(rm.code).toBe(0);
    await expectNoTraces();
  });
});
