import type { Command } from "commander";
import { ConfigError } from "../../errors.js";
import { parsePortSpec } from "../../network/ports.js";
import type { NetworkSpec } from "../../sandbox/network.js";

/**
 * The network flags of `run` and `create` (docker's where docker has them). The default mode
 * is the bridge, as docker's; COCOON_NETWORK changes it (the test suites set "none", so that
 * no test makes cocoon0 in the machine's own namespace), and the mock hypervisor has none.
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
  const mode = o.network ?? process.env.COCOON_NETWORK ?? (hypervisor === "mock" ? "none" : "bridge");
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
