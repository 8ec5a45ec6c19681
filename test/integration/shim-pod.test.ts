import { execFile } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { fromBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, expect, it } from "vitest";
import * as shim from "../../src/gen/shim/github.com/containerd/containerd/runtime/v2/task/shim_pb.js";
import { isProcessAlive } from "../../src/host/proc.js";
import {
  Events,
  type ForwardRequest,
} from "../../src/gen/shim/github.com/containerd/containerd/api/services/ttrpc/events/v1/events_pb.js";
import { TtrpcClient } from "../../src/shim/ttrpc/client.js";
import { TtrpcServer } from "../../src/shim/ttrpc/server.js";
import { Code, TtrpcError } from "../../src/shim/ttrpc/status.js";
import { CallerNetwork } from "../helpers/netns.js";
import { busyboxRootfs } from "../helpers/rootfs.js";
import { ASSETS_DIR, filesUnder, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";

// A Kubernetes pod as containerd's CRI plugin drives it, from a small ttrpc client (containerd
// 1.6's ctr cannot set the CRI annotations): the sandbox container boots the VM, a second
// container with the pod's sandbox id reaches the same shim and runs in the same guest.
const run = promisify(execFile);
const SHIM = path.resolve(import.meta.dirname, "../../bin/containerd-shim-cocoon-v1.js");
const V2 = "containerd.task.v2.Task";
const POD = "pod-a";
const CTR = "ctr-b";

let root: string;
let cleanupRoot: () => Promise<void>;
let env: NodeJS.ProcessEnv;
let client: TtrpcClient | undefined;
let shimPid = 0;
/** containerd's event service, as the shim reaches it (`<address>.ttrpc`): the topics it got. */
let events: TtrpcServer | undefined;
const topics: string[] = [];

const cri = (type: "sandbox" | "container", extra: Record<string, string> = {}) => ({
  "io.kubernetes.cri.container-type": type,
  "io.kubernetes.cri.sandbox-id": POD,
  ...extra,
});

async function bundle(
  name: string,
  args: string[],
  annotations: Record<string, string>,
  netnsPath?: string,
): Promise<string> {
  const dir = path.join(root, "b", name);
  await busyboxRootfs(path.join(dir, "rootfs"));
  await writeFile(path.join(dir, "rootfs/etc/marker"), `${name}\n`);
  await writeFile(
    path.join(dir, "config.json"),
    JSON.stringify({
      ociVersion: "1.0.2",
      process: { args, env: ["PATH=/bin:/sbin:/usr/bin"], cwd: "/" },
      root: { path: "rootfs" },
      annotations,
      ...(netnsPath ? { linux: { namespaces: [{ type: "network", path: netnsPath }] } } : {}),
    }),
  );
  return dir;
}

/** `containerd-shim-cocoon-v1 … start` in a bundle, as containerd runs it: prints the address. */
async function shimStart(bundleDir: string, id: string): Promise<string> {
  const { stdout } = await run(
    process.execPath,
    [SHIM, "-namespace", "k8s", "-address", path.join(root, "ctd.sock"), "-id", id, "start"],
    { cwd: bundleDir, env },
  );
  return stdout.trim();
}

function call<I extends DescMessage, O extends DescMessage>(
  method: string,
  input: I,
  req: MessageInitShape<I>,
  output: O,
): Promise<MessageShape<O>> {
  return client!.call(V2, method, input, req, output);
}

const out = (name: string) => path.join(root, `${name}.out`);
const execSpec = (args: string[]) => ({
  typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
  value: Buffer.from(JSON.stringify({ args, env: ["PATH=/bin"], cwd: "/" })),
});

async function execAndWait(task: string, execId: string, args: string[]): Promise<string> {
  await call(
    "Exec",
    shim.ExecProcessRequestSchema,
    { id: task, execId, stdout: pathToFileURL(out(`${task}-${execId}`)).href, spec: execSpec(args) },
    shim.ExecProcessResponseSchema,
  );
  await call("Start", shim.StartRequestSchema, { id: task, execId }, shim.StartResponseSchema);
  const w = await call("Wait", shim.WaitRequestSchema, { id: task, execId }, shim.WaitResponseSchema);
  expect(w.exitStatus).toBe(0);
  await call("Delete", shim.DeleteRequestSchema, { id: task, execId }, shim.DeleteResponseSchema);
  return readFile(out(`${task}-${execId}`), "utf8");
}

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  env = {
    ...process.env,
    COCOON_ROOT: root,
    COCOON_ASSETS: ASSETS_DIR,
    COCOON_CONFIG: "",
    COCOON_SHIM_SOCKET_DIR: path.join(root, "s"),
  };
  await mkdir(path.join(root, "b"), { recursive: true });
  events = new TtrpcServer();
  events.registerService("containerd.services.events.ttrpc.v1.Events", Events, {
    forward: (req: ForwardRequest) => {
      topics.push(`${req.envelope?.topic} ${containerIdOf(req)}`);
      return Promise.resolve({});
    },
  } as Record<string, (req: never) => Promise<unknown>>);
  await events.listen(`${path.join(root, "ctd.sock")}.ttrpc`);
}, 600_000);

/** The container id inside a forwarded task event (every task event has it as field 1). */
function containerIdOf(req: ForwardRequest): string {
  const value = req.envelope?.event?.value;
  if (!value || value[0] !== 0x0a) return "?";
  return Buffer.from(value.subarray(2, 2 + (value[1] ?? 0))).toString();
}

/** The pod's network as the CRI plugin leaves it after CNI (test/helpers/netns.ts). */
let podNet: CallerNetwork | undefined;

afterAll(async () => {
  await podNet?.remove();
  client?.close();
  await events?.close();
  if (shimPid && (await isProcessAlive(shimPid))) process.kill(shimPid, "SIGKILL");
  await cleanupRoot?.();
});

it("two containers of one pod share one VM; exec ids of both are kept apart; nothing is left", async () => {
  // The pod's sandbox container (the pause container's role), sized by the CRI annotations.
  const podBundle = await bundle(
    POD,
    ["sleep", "600"],
    cri("sandbox", { "io.kubernetes.cri.sandbox-memory": String(512 * 2 ** 20) }),
    (podNet = await CallerNetwork.create("cct", "10.250.0")).path,
  );
  const address = await shimStart(podBundle, POD);
  expect(address).toMatch(/^unix:\/\//);
  shimPid = Number(await readFile(path.join(podBundle, "shim.pid"), "utf8"));
  client = await TtrpcClient.open(address.slice("unix://".length));
  await call(
    "Create",
    shim.CreateTaskRequestSchema,
    { id: POD, bundle: podBundle, stdout: pathToFileURL(out(POD)).href },
    shim.CreateTaskResponseSchema,
  );
  await call("Start", shim.StartRequestSchema, { id: POD }, shim.StartResponseSchema);

  // A later container of the pod: `start` hands back the same shim; Create adds it to the VM.
  const ctrBundle = await bundle(CTR, ["sh", "-c", "echo ready; exec sleep 600"], cri("container"));
  expect(await shimStart(ctrBundle, CTR)).toBe(address);
  await call(
    "Create",
    shim.CreateTaskRequestSchema,
    { id: CTR, bundle: ctrBundle, stdout: pathToFileURL(out(CTR)).href },
    shim.CreateTaskResponseSchema,
  );
  await call("Start", shim.StartRequestSchema, { id: CTR }, shim.StartResponseSchema);
  for (let i = 0; i < 100 && !(await readFile(out(CTR), "utf8").catch(() => "")).includes("ready"); i++)
    await new Promise((r) => setTimeout(r, 100));
  expect(await readFile(out(CTR), "utf8")).toBe("ready\n");

  // Same guest kernel (boot id), each container on its own rootfs, the same exec id in both.
  const probe = ["sh", "-c", "cat /proc/sys/kernel/random/boot_id /etc/marker; grep MemTotal /proc/meminfo"];
  const inPod = (await execAndWait(POD, "e1", probe)).split("\n");
  const inCtr = (await execAndWait(CTR, "e1", probe)).split("\n");
  expect(inCtr[0]).toMatch(/^[0-9a-f-]{36}$/);
  expect(inCtr[0]).toBe(inPod[0]);
  expect(inPod[1]).toBe(POD);
  expect(inCtr[1]).toBe(CTR);
  // 2048 MiB by default + the pod's 512 MiB: the guest sees more than the default alone.
  const memKiB = Number(/MemTotal:\s+(\d+)/.exec(inCtr[2] ?? "")?.[1]);
  expect(memKiB).toBeGreaterThan(2100 * 1024);
  const vmms = (await processesMentioning(root)).filter((p) => p.cmdline.includes("qemu-system"));
  expect(vmms).toHaveLength(1);

  // The pod's network namespace (spec linux.namespaces) was scanned: the guest has the veth's
  // address, and the container reaches the peer through the tc mirroring.
  const net = await execAndWait(CTR, "e2", [
    "sh",
    "-c",
    "ip -o -4 addr show; ping -c 1 -W 10 10.250.0.1 >/dev/null && echo ping-ok",
  ]);
  expect(net).toContain("10.250.0.2/24");
  expect(net).toContain("ping-ok");

  // Update: the default microvm cannot resize; containerd gets FailedPrecondition and the reason.
  const resources = {
    typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
    value: Buffer.from(JSON.stringify({ cpu: { quota: 100000, period: 100000 } })),
  };
  const update = (await call(
    "Update",
    shim.UpdateTaskRequestSchema,
    { id: POD, resources },
    EmptySchema,
  ).catch((e: unknown) => e)) as TtrpcError;
  expect(update.code).toBe(Code.failedPrecondition);
  expect(update.message).toMatch(/cannot change the vCPU count.*q35/);

  // The pod's sandbox task cannot go while a container of the pod is still there.
  await call("Kill", shim.KillRequestSchema, { id: POD, signal: 9 }, EmptySchema);
  await call("Wait", shim.WaitRequestSchema, { id: POD }, shim.WaitResponseSchema);
  const refused = (await call(
    "Delete",
    shim.DeleteRequestSchema,
    { id: POD },
    shim.DeleteResponseSchema,
  ).catch((e: unknown) => e)) as TtrpcError;
  expect(refused.code).toBe(Code.failedPrecondition);
  expect(refused.message).toContain(CTR);

  // The container goes, its rootfs leaves the pod share; then the pod, its VM and the shim.
  await call("Kill", shim.KillRequestSchema, { id: CTR, signal: 9 }, EmptySchema);
  const w = await call("Wait", shim.WaitRequestSchema, { id: CTR }, shim.WaitResponseSchema);
  expect(w.exitStatus).toBe(137);
  await call("Delete", shim.DeleteRequestSchema, { id: CTR }, shim.DeleteResponseSchema);
  const { stdout: mountsAfterCtr } = await run("findmnt", ["-rn", "-o", "TARGET"]);
  expect(mountsAfterCtr.split("\n").filter((t) => t.includes(`/pod/${CTR}`))).toEqual([]);
  await call("Delete", shim.DeleteRequestSchema, { id: POD }, shim.DeleteResponseSchema);
  await call("Shutdown", shim.ShutdownRequestSchema, { id: POD }, EmptySchema);
  client.close();
  client = undefined;

  for (let i = 0; i < 100 && (await isProcessAlive(shimPid)); i++)
    await new Promise((r) => setTimeout(r, 100));
  expect(await isProcessAlive(shimPid)).toBe(false);
  for (let i = 0; i < 100 && (await processesMentioning(root)).length; i++)
    await new Promise((r) => setTimeout(r, 100));
  expect(await processesMentioning(root)).toEqual([]);
  const { stdout } = await run("findmnt", ["-rn", "-o", "TARGET"]);
  expect(stdout.split("\n").filter((t) => t.startsWith(root))).toEqual([]);
  expect(await filesUnder(path.join(root, "s"))).toEqual([]);
  expect(await filesUnder(path.join(root, "run", "sbs"))).toEqual([]);
  // The namespace is the caller's: it stays, with its veth and without cocoon's tap or tc filters.
  expect(await podNet!.links()).toEqual(["lo", "eth0"]);
  const { stdout: filters } = await run("tc", [
    "-n",
    podNet!.name,
    "filter",
    "show",
    "dev",
    "eth0",
    "ingress",
  ]);
  expect(filters.trim()).toBe("");

  // containerd saw each task's life in order, the pod's container inside the pod's.
  const of = (id: string) => topics.filter((t) => t.endsWith(` ${id}`)).map((t) => t.split(" ")[0]);
  expect(of(CTR)).toEqual([
    "/tasks/create",
    "/tasks/start",
    ...["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"], // e1
    ...["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"], // e2
    "/tasks/exit",
    "/tasks/delete",
  ]);
  expect(of(POD)).toEqual([
    "/tasks/create",
    "/tasks/start",
    "/tasks/exec-added",
    "/tasks/exec-started",
    "/tasks/exit",
    "/tasks/exit",
    "/tasks/delete",
  ]);
  expect(topics.indexOf(`/tasks/delete ${CTR}`)).toBeLessThan(topics.indexOf(`/tasks/delete ${POD}`));
}, 600_000);

it("after the shim is SIGKILLed, containerd's `delete` subcommand removes the VM, mounts, state and socket", async () => {
  const id = "solo";
  const dir = await bundle(id, ["sleep", "600"], {});
  const address = await shimStart(dir, id);
  const pid = Number(await readFile(path.join(dir, "shim.pid"), "utf8"));
  const c = await TtrpcClient.open(address.slice("unix://".length));
  try {
    await c.call(
      V2,
      "Create",
      shim.CreateTaskRequestSchema,
      { id, bundle: dir },
      shim.CreateTaskResponseSchema,
    );
    await c.call(V2, "Start", shim.StartRequestSchema, { id }, shim.StartResponseSchema);
  } finally {
    c.close();
  }
  process.kill(pid, "SIGKILL");
  for (let i = 0; i < 50 && (await isProcessAlive(pid)); i++) await new Promise((r) => setTimeout(r, 100));
  // The VM outlives its shim (its monitor owns it): that is what `delete` is for.
  expect((await processesMentioning(root)).some((p) => p.cmdline.includes("qemu-system"))).toBe(true);

  const { stdout } = await run(
    process.execPath,
    [SHIM, "-namespace", "k8s", "-address", path.join(root, "ctd.sock"), "-id", id, "-bundle", dir, "delete"],
    { cwd: dir, env, encoding: "buffer" },
  );
  const answer = fromBinary(shim.DeleteResponseSchema, stdout);
  expect(answer.exitStatus).toBe(137);
  for (let i = 0; i < 100 && (await processesMentioning(root)).length; i++)
    await new Promise((r) => setTimeout(r, 100));
  expect(await processesMentioning(root)).toEqual([]);
  const { stdout: mounts } = await run("findmnt", ["-rn", "-o", "TARGET"]);
  expect(mounts.split("\n").filter((t) => t.startsWith(root))).toEqual([]);
  expect(await filesUnder(path.join(root, "run", "sbs"))).toEqual([]);
  expect(await filesUnder(path.join(root, "s"))).toEqual([]);
}, 600_000);
