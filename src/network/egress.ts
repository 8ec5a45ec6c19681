import { ConfigError } from "../errors.js";
import { parseCidr, type Cidr } from "./cidr.js";
import { runInNetns, tryInNetns } from "./netns.js";

/**
 * Egress policy, enforced in the sandbox's namespace on the host side of the tap, where the
 * guest cannot undo it. Frames the guest sends arrive on the tap's ingress; under
 * `--egress deny` that direction is not a tc redirect but an nftables netdev chain that
 * forwards (`fwd to`) only what the policy allows to the interface and drops the rest. (A tc
 * redirect skips the netfilter hooks, so filtering must *be* the forwarding step.)
 *
 * The netdev family has no connection tracking, so the rules are stateless: ARP always passes,
 * TCP segments that do not open a connection pass (replies of the guest's own servers, e.g.
 * through -p), new TCP connections and any other IP traffic pass only to allowed destinations.
 */

export interface EgressRule {
  cidr: Cidr;
  port?: number;
}

export interface EgressPolicy {
  mode: "allow" | "deny";
  allow: EgressRule[];
}

/** `--allow-egress CIDR[:PORT]`, e.g. 10.1.0.0/16 or 192.0.2.7:443. */
export function parseEgressRule(text: string): EgressRule {
  const m = /^([0-9./]+)(?::(\d{1,5}))?$/.exec(text.trim());
  if (!m) throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid --allow-egress "${text}": use CIDR[:PORT]`);
  const cidr = parseCidr(m[1]!, "--allow-egress block");
  if (m[2] === undefined) return { cidr };
  const port = Number(m[2]);
  if (!(port >= 1 && port <= 65535))
    throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid --allow-egress "${text}": the port is 1-65535`);
  return { cidr, port };
}

export function egressTableName(tap: string): string {
  return `cocoon_egress_${tap}`;
}

/** The nftables script for one tap/interface pair. */
export function egressRuleset(
  tap: string,
  iface: string,
  policy: EgressPolicy,
  nameservers: string[],
): string {
  const fwd = `fwd to "${iface}"`;
  const lines = [
    `table netdev ${egressTableName(tap)} {`,
    "  chain guest_out {",
    `    type filter hook ingress device "${tap}" priority 0; policy drop;`,
    `    meta protocol arp ${fwd}`,
    `    ip protocol tcp tcp flags & (syn | ack) != syn ${fwd}`,
  ];
  for (const ns of nameservers) {
    lines.push(`    ip daddr ${ns} udp dport 53 ${fwd}`, `    ip daddr ${ns} tcp dport 53 ${fwd}`);
  }
  for (const r of policy.allow) {
    if (r.port === undefined) lines.push(`    ip daddr ${r.cidr.text} ${fwd}`);
    else
      lines.push(
        `    ip daddr ${r.cidr.text} tcp dport ${r.port} ${fwd}`,
        `    ip daddr ${r.cidr.text} udp dport ${r.port} ${fwd}`,
      );
  }
  lines.push("    counter drop", "  }", "}");
  return lines.join("\n") + "\n";
}

/**
 * Replaces the tap→interface tc redirect with the policy chain. Called after mirroring, so the
 * interface→tap direction stays a tc redirect.
 */
export async function applyEgressPolicy(
  nsPath: string,
  tap: string,
  iface: string,
  policy: EgressPolicy,
  nameservers: string[],
): Promise<void> {
  await runInNetns(nsPath, "nft", ["-f", "-"], { input: egressRuleset(tap, iface, policy, nameservers) });
  // Only once the chain forwards may the redirect go: no window where traffic bypasses it.
  await runInNetns(nsPath, "tc", ["filter", "del", "dev", tap, "ingress"]);
}

export async function removeEgressPolicy(nsPath: string, tap: string): Promise<void> {
  await tryInNetns(nsPath, "nft", ["delete", "table", "netdev", egressTableName(tap)]);
}
