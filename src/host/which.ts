import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import path from "node:path";

/** Resolves a program name on PATH (or checks an absolute path); undefined when not executable. */
export async function which(program: string, envPath = process.env.PATH ?? ""): Promise<string | undefined> {
  const candidates = program.includes("/")
    ? [program]
    : envPath
        .split(":")
        .filter(Boolean)
        .map((dir) => path.join(dir, program));
  for (const candidate of candidates) {
    try {
      const st = await stat(candidate);
      if (!st.isFile()) continue;
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next directory
    }
  }
  return undefined;
}
