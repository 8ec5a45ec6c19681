import type { Command } from "commander";
import { ConfigError } from "../../errors.js";
import { parsePortSpec } from "../../network/ports.js";
import type { NetworkSpec } from "../../sandbox/network.js";
import { Runtime } from "../../sandbox/runtime.js";
import type { Runner } from "../main.js";

/**
 * The network flags of `run` and `create` (docker's where docker has them). The default mode
 * is the bridge, as docker's; COCOON_NETWORK changes it (the test suites set "none", so that
 * no test makes cocoon0 in the machine's own namespace); drivers other than QEMU have none.
 */

export interface NetworkFlags {
  network?: string;
  publish: string[];
  dns: string[];
  addHost: string[];
  egress?: string;
  allowEgress: string[];
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function networkOptions(cmd: Command): Command {
  return cmd
    .option("--network <mode>", "bridge (default), none, or ns:PATH to join an existing network namespace")
    .option(
      "-p, --publish <[ip:]hostPort:guestPort[/proto]>",
      "publish a guest port on the host (repeatable)",
      collect,
      [],
    )
    .option(
      "--dns <ip>",
      "a DNS server for the guest (repeatable; default on the bridge: the host's)",
      collect,
      [],
    )
    .option("--add-host <host:ip>", "add a line to the guest's /etc/hosts (repeatable)", collect, [])
    .option("--egress <policy>", "allow (default) or deny the guest's outgoing connections")
    .option(
      "--allow-egress <cidr[:port]>",
      "with --egress deny: a destination the guest may reach (repeatable)",
      collect,
      [],
    );
}

function parseAddHost(entry: string): { name: string; ip: string } {
  const i = entry.indexOf(":");
  if (i <= 0 || i === entry.length - 1)
    throw new ConfigError(
      "ERR_INVALID_ARGUMENT",
      `invalid --add-host "${entry}": use HOST:IP, e.g. db:10.0.0.5`,
    );
  return { name: entry.slice(0, i), ip: entry.slice(i + 1) };
}

export function networkSpecFrom(o: NetworkFlags, hypervisor: string | undefined): NetworkSpec {
  // Only QEMU is wired to a network so far: the other drivers default to none.
  const mode = o.network ?? process.env.COCOON_NETWORK ?? (hypervisor === "qemu" ? "bridge" : "none");
  let spec: NetworkSpec;
  if (mode.startsWith("ns:")) spec = { mode: "ns", nsPath: mode.slice(3) };
  else if (mode === "bridge" || mode === "none") spec = { mode };
  else
    throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid --network "${mode}": use bridge, none or ns:PATH`);
  if (o.egress !== undefined && o.egress !== "allow" && o.egress !== "deny")
    throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid --egress "${o.egress}": use allow or deny`);
  return {
    ...spec,
    ports: o.publish.map(parsePortSpec),
    hosts: o.addHost.map(parseAddHost),
    ...(o.egress ? { egress: o.egress } : {}),
    allowEgress: o.allowEgress,
  };
}

/** `cocoon network connect|disconnect|ls`: interface hotplug (q35) and the guest's view. */
export function registerNetworkCommands(program: Command, run: Runner): void {
  const net = program.command("network").description("a sandbox's network interfaces and routes");
  net
    .command("connect")
    .description("hot-plug an interface of the sandbox's network namespace into its VM (q35)")
    .argument("<sandbox>", "sandbox id")
    .argument("<interface>", "the interface in the sandbox's namespace (e.g. a veth you moved there)")
    .option(
      "--address <cidr>",
      "an address for the guest NIC (repeatable; default: the interface's)",
      collect,
      [],
    )
    .option("--mtu <n>", "MTU of the guest NIC (default: the interface's)")
    .action((id: string, iface: string, o: { address: string[]; mtu?: string }) =>
      run(async (ctx) => {
        const sandbox = await Runtime.fromConfig(ctx.loaded, ctx.logger).loadSandbox(id);
        try {
          const mtu = o.mtu === undefined ? undefined : Number(o.mtu);
          if (mtu !== undefined && !(Number.isInteger(mtu) && mtu >= 68 && mtu <= 65535))
            throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid --mtu "${o.mtu}": 68-65535`);
          const nic = await sandbox.addInterface({
            iface,
            ...(o.address.length ? { addresses: o.address } : {}),
            ...(mtu ? { mtu } : {}),
          });
          ctx.io.out(ctx.json ? JSON.stringify(nic) : `${nic.name} ${nic.mac} ${nic.addresses.join(",")}`);
          return 0;
        } finally {
          await sandbox.release();
        }
      }),
    );
  net
    .command("disconnect")
    .description("hot-unplug an interface connect added")
    .argument("<sandbox>", "sandbox id")
    .argument("<interface>", "the interface")
    .action((id: string, iface: string) =>
      run(async (ctx) => {
        const sandbox = await Runtime.fromConfig(ctx.loaded, ctx.logger).loadSandbox(id);
        try {
          await sandbox.removeInterface(iface);
          return 0;
        } finally {
          await sandbox.release();
        }
      }),
    );
  net
    .command("ls")
    .description("the guest's interfaces and routes")
    .argument("<sandbox>", "sandbox id")
    .action((id: string) =>
      run(async (ctx) => {
        const sandbox = await Runtime.fromConfig(ctx.loaded, ctx.logger).loadSandbox(id);
        try {
          const interfaces = await sandbox.listInterfaces();
          const routes = await sandbox.listRoutes();
          if (ctx.json) ctx.io.out(JSON.stringify({ interfaces, routes }));
          else {
            for (const i of interfaces)
              ctx.io.out(
                `${i.name}\t${i.mac}\tmtu ${i.mtu}\t${i.up ? "up" : "down"}\t${i.addresses.join(",")}`,
              );
            for (const r of routes)
              ctx.io.out(
                `route ${r.dest}${r.gateway ? ` via ${r.gateway}` : ""}${r.device ? ` dev ${r.device}` : ""}`,
              );
          }
          return 0;
        } finally {
          await sandbox.release();
        }
      }),
    );
}
