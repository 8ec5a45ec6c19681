import { constants } from "node:os";
import { CocoonError } from "../errors.js";

const BY_NAME = constants.signals as Record<string, number>;

/** A signal's number from its name ("SIGTERM", "TERM") or number ("15"), as runc's kill takes it. */
export function parseSignal(text: string): number {
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (n >= 1 && n <= 64) return n;
  } else {
    const upper = text.toUpperCase();
    const n = BY_NAME[upper.startsWith("SIG") ? upper : `SIG${upper}`];
    if (n !== undefined) return n;
  }
  throw new CocoonError("ERR_INVALID_ARGUMENT", `unknown signal "${text}"`);
}

/** The name the guest agent takes ("SIGTERM"); real-time signals by number. */
export function signalName(n: number): string {
  for (const [name, v] of Object.entries(BY_NAME)) if (v === n) return name;
  return String(n);
}

export function signalNumber(name: string): number {
  return BY_NAME[name] ?? 0;
}
