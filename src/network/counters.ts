import { runChecked } from "../host/process.js";

/** Byte counters of one interface, as /proc/net/dev gives them (receive, transmit). */
export interface IfaceBytes {
  rx: number;
  tx: number;
}

/** Parses /proc/net/dev: `  name: rxBytes rxPackets … (8 receive fields) txBytes …`. */
export function parseNetDev(text: string): Map<string, IfaceBytes> {
  const out = new Map<string, IfaceBytes>();
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon === -1) continue;
    const name = line.slice(0, colon).trim();
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    if (!name || fields.length < 16 || fields.some((n) => !Number.isFinite(n))) continue;
    out.set(name, { rx: fields[0]!, tx: fields[8]! });
  }
  return out;
}

/**
 * What a sandbox's guest received and sent, from its taps in the sandbox's namespace (read
 * there: /proc/net/dev shows the reader's namespace). A tap's transmit is the guest's receive.
 */
export async function guestNetworkBytes(
  nsPath: string,
  taps: string[],
): Promise<{ rxBytes: number; txBytes: number } | undefined> {
  if (taps.length === 0) return undefined;
  const { stdout } = await runChecked("nsenter", [`--net=${nsPath}`, "cat", "/proc/net/dev"], {
    timeoutMs: 10_000,
  });
  const all = parseNetDev(stdout);
  let rxBytes = 0;
  let txBytes = 0;
  for (const tap of taps) {
    const c = all.get(tap);
    if (!c) continue;
    rxBytes += c.tx;
    txBytes += c.rx;
  }
  return { rxBytes, txBytes };
}
