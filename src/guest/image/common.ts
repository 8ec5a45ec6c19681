import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { access } from "node:fs/promises";
import { HostError } from "../../errors.js";
import { which } from "../../host/which.js";

/** The cocoon package root (see package-root.ts). */
export { PACKAGE_ROOT } from "../../package-root.js";

export function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** A short content key for an asset from a description of all its inputs. */
export function assetKey(inputs: unknown): string {
  return sha256(JSON.stringify(inputs)).slice(0, 16);
}

/** A build step's progress, relayed by the CLI as one line each. */
export interface BuildProgress {
  asset: "kernel" | "rootfs";
  step: string;
  message: string;
}
export type ProgressSink = (event: BuildProgress) => void;

/** A host program a build needs and the Debian package that provides it. */
export interface Requirement {
  /** A program on PATH, or an absolute file that must exist. */
  program: string;
  debianPackage: string;
}

/** Fails with the exact programs and packages that are missing, all at once. */
export async function checkRequirements(what: string, requirements: Requirement[]): Promise<void> {
  const missing: Requirement[] = [];
  for (const r of requirements) {
    if (r.program.startsWith("/")) {
      try {
        await access(r.program);
      } catch {
        missing.push(r);
      }
    } else if (!(await which(r.program))) {
      missing.push(r);
    }
  }
  if (missing.length === 0) return;
  const programs = missing.map((m) => m.program).join(", ");
  const packages = [...new Set(missing.map((m) => m.debianPackage))].join(" ");
  throw new HostError(
    "ERR_HOST_MISSING_TOOL",
    `building the ${what} needs ${programs}, which ${missing.length > 1 ? "are" : "is"} missing`,
    {
      details: { missing: missing.map((m) => m.program), packages },
      hint: `install them with: apt-get install ${packages}   (or run scripts/setup.sh)`,
    },
  );
}
