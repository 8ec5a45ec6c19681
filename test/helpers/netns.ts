import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import { promisify } from "node:util";
import { COCOON_BIN } from "./cli-process.js";

const exec = promisify(execFile);

/**
 * A network namespace a test makes to play "the host": cocoon runs inside it, so the cocoon0
 * bridge, the masquerade and portmap rules and the sandbox namespaces all hang below it, and
 * the machine's own namespace is never touched. Servers the guests reach run in it too.
 */
export class TestNetns {
  readonly path: string;
  private readonly children: ChildProcess[] = [];

  private constructor(readonly name: string) {
    this.path = `/var/run/netns/${name}`;
  }

  static async create(prefix = "cct-net"): Promise<TestNetns> {
    const ns = new TestNetns(`${prefix}-${randomBytes(3).toString("hex")}`);
    await exec("ip", ["netns", "add", ns.name]);
    await ns.run("ip", ["link", "set", "lo", "up"]);
    return ns;
  }

  /** Runs a program in the namespace to completion; throws on a non-zero exit. */
  async run(file: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
    const { stdout } = await exec("nsenter", [`--net=${this.path}`, "--", file, ...args], {
      env: { ...process.env, ...env },
      maxBuffer: 64 * 1024 * 1024,
      timeout: 600_000,
    });
    return stdout;
  }

  /** Runs the real cocoon CLI in the namespace; never throws (returns the status). */
  cocoon(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(
        "nsenter",
        [`--net=${this.path}`, "--", process.execPath, COCOON_BIN, ...args],
        { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024, timeout: 600_000 },
        (err, stdout, stderr) => {
          const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
          resolve({ code, stdout, stderr });
        },
      );
    });
  }

  /** Starts cocoon in the namespace and returns the process (to be killed by the test). */
  spawnCocoon(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
    return spawn("nsenter", [`--net=${this.path}`, "--", process.execPath, COCOON_BIN, ...args], {
      env: { ...process.env, ...env },
      stdio: "ignore",
    });
  }

  /** A long-running server in the namespace, ended by destroy(). */
  background(file: string, args: string[]): ChildProcess {
    const child = spawn("nsenter", [`--net=${this.path}`, "--", file, ...args], { stdio: "ignore" });
    this.children.push(child);
    return child;
  }

  /** An HTTP GET from inside the namespace, retried until it answers or `tries` run out. */
  async httpGet(url: string, tries = 1): Promise<string | undefined> {
    const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(5000) }).then(async (r) => process.stdout.write(await r.text()), () => process.exit(1))`;
    for (let i = 0; i < tries; i++) {
      try {
        return await this.run(process.execPath, ["-e", script]);
      } catch {
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    return undefined;
  }

  /** What per-sandbox traces the namespace and the machine hold; compared before and after. */
  async traces(
    netnsPrefix: string,
  ): Promise<{ netns: string[]; links: string[]; iptables: string; nft: string }> {
    const links = (await this.run("ip", ["-o", "link", "show"]))
      .split("\n")
      .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
      .filter((n): n is string => !!n)
      .sort();
    const iptables = (await this.run("iptables-save", []))
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .map((l) => l.replace(/\[\d+:\d+\]/g, ""))
      .join("\n");
    const nft = (await this.run("nft", ["list", "ruleset"])).replace(/packets \d+ bytes \d+/g, "");
    const netns = (await readdir("/var/run/netns")).filter((n) => n.startsWith(netnsPrefix)).sort();
    return { netns, links, iptables, nft };
  }

  async destroy(): Promise<void> {
    for (const c of this.children) c.kill("SIGKILL");
    await exec("ip", ["netns", "delete", this.name]).catch(() => undefined);
  }
}

/** Commands in a namespace the test did not make (a sandbox's), to look at it. */
export class TestNetnsView {
  constructor(readonly name: string) {}
  async run(file: string, args: string[]): Promise<string> {
    const { stdout } = await exec("nsenter", [`--net=/var/run/netns/${this.name}`, "--", file, ...args]);
    return stdout;
  }
}

/**
 * The network a caller leaves for a container after running CNI (containerd's CRI plugin for a
 * pod, podman): a namespace holding a veth `eth0` with `<subnet>.2/24`, whose peer (the "node",
 * `<subnet>.1`) sits in a second namespace. Both are the test's own; `remove` deletes them.
 */
export class CallerNetwork {
  private constructor(
    readonly name: string,
    readonly peerName: string,
  ) {}

  get path(): string {
    return `/run/netns/${this.name}`;
  }

  static async create(prefix: string, subnet: string): Promise<CallerNetwork> {
    const net = new CallerNetwork(`${prefix}-pod-${process.pid}`, `${prefix}-peer-${process.pid}`);
    const ip = (args: string[]) => exec("ip", args);
    await ip(["netns", "add", net.name]);
    await ip(["netns", "add", net.peerName]);
    await ip([
      "-n",
      net.name,
      "link",
      "add",
      "eth0",
      "type",
      "veth",
      "peer",
      "name",
      "vpeer",
      "netns",
      net.peerName,
    ]);
    await ip(["-n", net.name, "addr", "add", `${subnet}.2/24`, "dev", "eth0"]);
    await ip(["-n", net.name, "link", "set", "eth0", "up"]);
    await ip(["-n", net.peerName, "addr", "add", `${subnet}.1/24`, "dev", "vpeer"]);
    await ip(["-n", net.peerName, "link", "set", "vpeer", "up"]);
    return net;
  }

  /** The namespace's link names: what cocoon found there must be all that is left. */
  async links(): Promise<string[]> {
    const { stdout } = await exec("ip", ["-n", this.name, "-o", "link", "show"]);
    return stdout
      .split("\n")
      .filter(Boolean)
      .map((l) => l.split(":")[1]?.trim().split("@")[0] ?? "");
  }

  async remove(): Promise<void> {
    for (const ns of [this.name, this.peerName])
      await exec("ip", ["netns", "del", ns]).catch(() => undefined);
  }
}
