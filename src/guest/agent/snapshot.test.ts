import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { agentLauncherScript, bundleAgent, GUEST_AGENT_PATH, writeAgentSnapshot } from "../image/rootfs.js";
import { AGENT_BUNDLE_FILE, WRITE_CODE_CACHE_FLAG } from "./code-cache.js";
import { AGENT_SNAPSHOT_FILE } from "./snapshot.js";

const run = promisify(execFile);
// Without the test runner's NODE_OPTIONS, as the image build and the guest run node.
const env = { PATH: process.env.PATH ?? "/usr/bin:/bin" };

// A stand-in agent: startAgent says how node started it (the snapshot's main has
// --snapshot-blob in its execArgv) and, from a snapshot, whether its module state came along.
const BUNDLE = `"use strict";
const { basename } = require("node:path");
const evaluatedAt = process.pid;
module.exports = {
  startAgent: async () => {
    const from = process.execArgv.includes("--snapshot-blob") ? "snapshot" : "bundle";
    process.stdout.write(\`started from \${from}, evaluated in \${evaluatedAt === process.pid ? "this" : "another"} process, \${basename(__filename)}\\n\`);
  },
};
`;

describe("agent startup snapshot and its fallback", () => {
  let dir: string;
  let loader: string;
  beforeAll(async () => {
    loader = (await bundleAgent()).loader;
  }, 60_000);
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "cocoon-snapshot-"));
    await writeFile(path.join(dir, path.basename(GUEST_AGENT_PATH)), loader);
    await writeFile(path.join(dir, AGENT_BUNDLE_FILE), BUNDLE);
    await run(process.execPath, [path.join(dir, path.basename(GUEST_AGENT_PATH)), WRITE_CODE_CACHE_FLAG], {
      env,
    });
  }, 60_000);
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const launch = async (): Promise<{ stdout: string; stderr: string }> => {
    const script = path.join(dir, "launcher.sh");
    await writeFile(script, agentLauncherScript(process.execPath, dir), { mode: 0o755 });
    return run("/bin/sh", [script], { env, timeout: 60_000 });
  };

  it("builds a snapshot whose main starts the agent, its modules evaluated at build", async () => {
    const warnings: string[] = [];
    const size = await writeAgentSnapshot(process.execPath, dir, (m) => warnings.push(m));
    expect(warnings).toEqual([]);
    expect(size).toBe((await stat(path.join(dir, AGENT_SNAPSHOT_FILE))).size);
    const { stdout, stderr } = await launch();
    expect(stdout).toBe(`started from snapshot, evaluated in another process, ${AGENT_BUNDLE_FILE}\n`);
    expect(stderr).toBe("");
  }, 60_000);

  it("starts the agent from its bundle when there is no snapshot", async () => {
    const { stdout, stderr } = await launch();
    expect(stdout).toBe(`started from bundle, evaluated in this process, ${AGENT_BUNDLE_FILE}\n`);
    expect(stderr).toBe("");
  }, 60_000);

  it("starts the agent from its bundle when node refuses the snapshot (other V8 flags or CPU)", async () => {
    // Built with a V8 flag the guest's node does not run with: node refuses it as it refuses a
    // blob from another binary or for another CPU (exit 14).
    const blob = path.join(dir, AGENT_SNAPSHOT_FILE);
    const entry = path.join(dir, path.basename(GUEST_AGENT_PATH));
    await run(process.execPath, ["--no-enable-sse4-2", "--snapshot-blob", blob, "--build-snapshot", entry], {
      env,
      cwd: dir,
    });
    const { stdout, stderr } = await launch();
    expect(stdout).toBe(`started from bundle, evaluated in this process, ${AGENT_BUNDLE_FILE}\n`);
    expect(stderr).toMatch(/did not start the agent from its startup snapshot \(exit 14\)/);
  }, 60_000);

  it("starts the agent from its bundle when the snapshot is damaged", async () => {
    await writeFile(path.join(dir, AGENT_SNAPSHOT_FILE), "not a snapshot");
    const { stdout, stderr } = await launch();
    expect(stdout).toBe(`started from bundle, evaluated in this process, ${AGENT_BUNDLE_FILE}\n`);
    expect(stderr).toMatch(/did not start the agent from its startup snapshot/);
  }, 60_000);

  it("leaves the snapshot out when node cannot build it", async () => {
    await writeFile(path.join(dir, AGENT_BUNDLE_FILE), `throw new Error("no agent here");\n`);
    const warnings: string[] = [];
    expect(await writeAgentSnapshot(process.execPath, dir, (m) => warnings.push(m))).toBe(0);
    expect(warnings.join("\n")).toMatch(/no startup snapshot for the agent/);
    await expect(readFile(path.join(dir, AGENT_SNAPSHOT_FILE))).rejects.toThrow(/ENOENT/);
  }, 60_000);
});
