/**
 * The API client against Firecracker (the strict fake of each version, or a real binary):
 * version learning, refusals of what the running version lacks, both error shapes, the
 * Deprecation header, and Firecracker's own refusals answered as the real one answers.
 */
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  FirecrackerClient,
  apiErrorFrom,
  type DeprecationNotice,
  type RawResponse,
} from "../../../src/vmm/firecracker/client.js";
import {
  FirecrackerApiError,
  FirecrackerRequestError,
  FirecrackerVersionError,
} from "../../../src/vmm/firecracker/errors.js";
import { isProcessAlive } from "../../../src/host/proc.js";
import { MicroVM } from "../../../src/vmm/firecracker/microvm.js";
import { atLeast } from "../../../src/vmm/firecracker/version.js";
import {
  VERSIONS,
  guestKernel,
  guestRootfs,
  leaks,
  removeTmp,
  shortTmp,
  target,
  type Target,
} from "./helpers.js";

/** One raw HTTP exchange on the socket, to see the status line as Firecracker writes it. */
function rawExchange(socketPath: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    let data = "";
    sock.on("data", (c: Buffer) => {
      data += c.toString("latin1");
      const head = data.indexOf("\r\n\r\n");
      if (head === -1) return;
      const len = Number(/content-length: (\d+)/i.exec(data.slice(0, head))?.[1] ?? 0);
      if (data.length >= head + 4 + len) {
        sock.destroy();
        resolve(data);
      }
    });
    sock.on("error", reject);
    sock.on("connect", () => sock.write(request));
  });
}

/** A raw exchange's answer as the client sees one. */
function rawResponse(answer: string): RawResponse {
  const head = answer.indexOf("\r\n\r\n");
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
  return { status, headers: {}, text: Buffer.from(answer.slice(head + 4), "latin1").toString("utf8") };
}

describe.each(VERSIONS)("Firecracker client against %s", (label) => {
  let t: Target;
  let dir: string;
  let vm: MicroVM;
  let client: FirecrackerClient;
  const notices: DeprecationNotice[] = [];

  beforeAll(async () => {
    t = await target(label);
    dir = await shortTmp();
    vm = await MicroVM.create({ id: "client-1", firecrackerPath: t.firecracker, resourceDir: dir });
    vm.kernelFile = await guestKernel(dir);
    await vm.spawn({ jailed: false, log: false, metrics: false });
    client = await FirecrackerClient.connect({
      socketPath: vm.apiSocketPath,
      onDeprecation: (n) => notices.push(n),
    });
  });

  afterAll(async () => {
    await client?.close();
    await vm?.cleanup();
    // Checked before, asserted after the removal: a failed check must not leave the directory.
    const left = await leaks(dir);
    await removeTmp(dir);
    expect(left).toEqual({ processes: [], mounts: [], sockets: [] });
  });

  it("learns the running version with GET /version first", async () => {
    expect(`${client.version.major}.${client.version.minor}.${client.version.patch}`).toBe(t.version);
    const info = (await client.describeInstance()).body;
    expect(info).toMatchObject({ id: "client-1", state: "Not started", app_name: "Firecracker" });
  });

  it("round-trips the machine configuration", async () => {
    await client.putMachineConfig({ vcpu_count: 2, mem_size_mib: 256 });
    expect((await client.getMachineConfig()).body).toMatchObject({
      vcpu_count: 2,
      mem_size_mib: 256,
      smt: false,
    });
  });

  it("patches part of the machine configuration, and refuses an empty PATCH before sending it", async () => {
    await client.putMachineConfig({ vcpu_count: 1, mem_size_mib: 128 });
    await client.patchMachineConfig({ vcpu_count: 2 });
    expect((await client.getMachineConfig()).body).toMatchObject({ vcpu_count: 2, mem_size_mib: 128 });
    const empty = await client.patchMachineConfig({}).catch((e: unknown) => e);
    expect(empty).toBeInstanceOf(FirecrackerRequestError);
    expect((empty as Error).message).toMatch(/Empty PATCH request/);
    // What Firecracker itself answers to one.
    expect(JSON.parse((await client.raw("PATCH", "/machine-config", {})).text)).toEqual({
      fault_message: "Empty PATCH request.",
    });
    await expect(client.patchMachineConfig({ vcpu_count: 0 })).rejects.toThrow(FirecrackerRequestError);
  });

  it("refuses a field newer than the running version, naming the version that added it", async () => {
    const send = () => client.putMachineConfig({ vcpu_count: 1, mem_size_mib: 128, huge_pages: "None" });
    if (atLeast(client.version, "1.7.0")) {
      await send();
    } else {
      const err = await send().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FirecrackerVersionError);
      expect((err as Error).message).toMatch(
        /MachineConfiguration\.huge_pages was added in Firecracker 1\.7\.0/,
      );
      expect((err as FirecrackerVersionError).code).toBe("ERR_NOT_SUPPORTED");
    }
  });

  it("refuses a field the running version removed", async () => {
    const err = await client
      .createSnapshot({ snapshot_path: "/s", mem_file_path: "/m", version: "1.0.0" })
      .catch((e: unknown) => e);
    if (atLeast(client.version, "1.6.0")) {
      expect(err).toBeInstanceOf(FirecrackerVersionError);
      expect((err as Error).message).toMatch(
        /SnapshotCreateParams\.version was removed in Firecracker 1\.6\.0/,
      );
    } else {
      // v1.0 knows the field: Firecracker itself refuses the call before boot.
      expect(err).toBeInstanceOf(FirecrackerApiError);
      expect((err as FirecrackerApiError).faultMessage).toBe(
        "The requested operation is not supported before starting the microVM.",
      );
    }
  });

  it("refuses an endpoint newer than the running version", async () => {
    const put = () => client.putEntropy({});
    if (atLeast(client.version, "1.4.0")) await put();
    else await expect(put()).rejects.toThrow(/the endpoint PUT \/entropy was added in Firecracker 1\.4\.0/);
  });

  it("turns fault_message answers into typed errors with status and message", async () => {
    const err = await client.patchDrive({ drive_id: "drive_0", path_on_host: "/x" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FirecrackerApiError);
    const e = err as FirecrackerApiError;
    expect(e.status).toBe(400);
    expect(e.bodyKey).toBe("fault_message");
    expect(e.faultMessage).toBe("The requested operation is not supported before starting the microVM.");
    expect(e.code).toBe("ERR_VMM_API");
  });

  it("refuses a body over the API payload limit before sending it, and Firecracker lives on", async () => {
    // Sent, such a body earns one 400 per KiB; hanging up on them kills Firecracker (SIGPIPE).
    const big = { blob: "x".repeat(60_000) };
    for (const send of [() => client.putMmds(big), () => client.raw("PUT", "/mmds", big)]) {
      const err = await send().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FirecrackerRequestError);
      expect((err as FirecrackerRequestError).message).toMatch(
        /^the body of PUT \/mmds is 60011 bytes, over Firecracker's API payload limit of 51200 bytes/,
      );
    }
    await sleep(200); // a Firecracker that took SIGPIPE would be gone by now
    expect(await isProcessAlive(vm.firecrackerPid!)).toBe(true);
    expect((await client.describeInstance()).status).toBe(200);
  });

  it('turns micro-http\'s { "error" } answers (not valid JSON) into typed errors', async () => {
    // Only the head of an oversized request: the server answers it at once and owes nothing more.
    const tooLarge = await rawExchange(
      vm.apiSocketPath,
      "PUT /mmds HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 60011\r\n\r\n",
    );
    const payload = apiErrorFrom("PUT", "/mmds", rawResponse(tooLarge));
    expect(payload.status).toBe(400);
    expect(payload.bodyKey).toBe("error");
    expect(payload.faultMessage).toBe(
      "Request payload with size 60011 is larger than the limit of 51200 allowed by server.\nAll previous unanswered requests will be dropped.",
    );
    const method = apiErrorFrom(
      "DELETE",
      "/",
      rawResponse(await rawExchange(vm.apiSocketPath, "POST / HTTP/1.1\r\nHost: localhost\r\n\r\n")),
    );
    expect(method.bodyKey).toBe("error");
    expect(method.faultMessage).toMatch(/^Invalid HTTP Method: Unsupported HTTP method\.\n/);
    expect(await isProcessAlive(vm.firecrackerPid!)).toBe(true);
    expect((await client.describeInstance()).status).toBe(200);
  });

  it("surfaces the Deprecation header (vsock_id)", async () => {
    const res = await client.putVsock({
      guest_cid: 3,
      uds_path: path.join(vm.chroot, "v.sock"),
      vsock_id: "root",
    });
    expect(res.deprecated).toBe(true);
    expect(notices.at(-1)).toEqual({ method: "PUT", path: "/vsock", fields: ["Vsock.vsock_id"] });
  });

  it("names MMDS V1 as what is deprecated (1.5+), and MicroVM configures V2 by default", async () => {
    await client.putNetworkInterface({ iface_id: "eth0", host_dev_name: "nosuchtap0" });
    notices.length = 0;
    await client.putMmdsConfig({ network_interfaces: ["eth0"] });
    await client.putMmdsConfig({ network_interfaces: ["eth0"], version: "V1" });
    await client.putMmdsConfig({ network_interfaces: ["eth0"], version: "V2" });
    expect(notices).toEqual(
      atLeast(client.version, "1.5.0")
        ? [
            {
              method: "PUT",
              path: "/mmds/config",
              fields: ['MmdsConfig.version (left out, so V1; send "V2")'],
            },
            { method: "PUT", path: "/mmds/config", fields: ['MmdsConfig.version="V1" (send "V2")'] },
          ]
        : [],
    );
    await vm.client.putNetworkInterface({ iface_id: "eth0", host_dev_name: "nosuchtap0" });
    await vm.configureMmds({ networkInterfaces: ["eth0"] });
    const cfg = (await client.getVmConfig()).body as { "mmds-config"?: { version?: string } };
    expect(cfg["mmds-config"]?.version).toBe("V2");
  });

  it("is answered with serde's message for an unknown field (raw request)", async () => {
    const res = await client.raw("PUT", "/machine-config", '{"vcpu_count":1,"mem_size_mib":128,"bogus":1}');
    expect(res.status).toBe(400);
    const fields = atLeast(client.version, "1.7.0")
      ? "`vcpu_count`, `mem_size_mib`, `smt`, `cpu_template`, `track_dirty_pages`, `huge_pages`"
      : "`vcpu_count`, `mem_size_mib`, `smt`, `cpu_template`, `track_dirty_pages`";
    const fault = apiErrorFrom("PUT", "/machine-config", res).faultMessage;
    if (t.real && atLeast(client.version, "1.1.0")) {
      // Only v1.0's text was observed; a newer real Firecracker may list its fields otherwise.
      expect(fault).toMatch(
        /^An error occurred when deserializing the json body of a request: unknown field `bogus`/,
      );
    } else {
      expect(fault).toBe(
        `An error occurred when deserializing the json body of a request: unknown field \`bogus\`, expected one of ${fields} at line 1 column 42.`,
      );
    }
    await expect(
      client.putMachineConfig({ vcpu_count: 1, mem_size_mib: 128, bogus: 1 } as never),
    ).rejects.toBeInstanceOf(FirecrackerRequestError);
  });

  it("answers the removed BlockDeviceRescan action and unknown routes like Firecracker", async () => {
    const rescan = await client.raw(
      "PUT",
      "/actions",
      '{"action_type":"BlockDeviceRescan","payload":"drive_0"}',
    );
    expect(apiErrorFrom("PUT", "/actions", rescan).faultMessage).toBe(
      "An error occurred when deserializing the json body of a request: unknown variant `BlockDeviceRescan`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel` at line 1 column 34.",
    );
    const route = await client.raw("GET", "/nonexistent");
    expect(JSON.parse(route.text)).toEqual({
      fault_message: "Invalid request method and/or path: GET nonexistent.",
    });
    const notJson = await client.raw("PUT", "/actions", "not json");
    expect(JSON.parse(notJson.text)).toEqual({
      fault_message:
        "An error occurred when deserializing the json body of a request: expected ident at line 1 column 2.",
    });
  });

  it("checks path ids: refused locally, and by Firecracker when sent raw", async () => {
    await expect(
      client.call(
        "PUT /drives/{drive_id}",
        { drive_id: "x" },
        { drive_id: "y", path_on_host: "/p", is_root_device: false, is_read_only: true },
      ),
    ).rejects.toThrow(/differs from the path/);
    await expect(
      client.putDrive({ drive_id: "bad-id", path_on_host: "/p", is_root_device: false, is_read_only: true }),
    ).rejects.toThrow(/letters, digits and underscores/);
    const res = await client.raw("PUT", "/drives/x", {
      drive_id: "y",
      path_on_host: "/p",
      is_root_device: false,
      is_read_only: true,
    });
    expect(JSON.parse(res.text)).toEqual({
      fault_message: "The id from the path does not match the id from the body!",
    });
  });

  it("writes status lines without a reason phrase and Firecracker's headers", async () => {
    const ok = await rawExchange(
      vm.apiSocketPath,
      "GET / HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n",
    );
    expect(ok.split("\r\n")[0]).toBe("HTTP/1.1 200 ");
    expect(ok).toMatch(/\r\nServer: Firecracker API\r\n/);
    const noContent = await rawExchange(
      vm.apiSocketPath,
      "PUT /mmds HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    );
    expect(noContent.split("\r\n")[0]).toBe("HTTP/1.1 204 ");
    expect(noContent).not.toMatch(/Content-Type/);
  });

  it("exports the VM configuration, nulls and kebab-case keys included", async () => {
    const rootfs = await guestRootfs(dir);
    await client.putBootSource({ kernel_image_path: vm.kernelFile });
    await client.putDrive({
      drive_id: "rootfs",
      path_on_host: rootfs,
      is_root_device: false,
      is_read_only: true,
    });
    const cfg = (await client.getVmConfig()).body as Record<string, unknown>;
    expect(cfg["boot-source"]).toMatchObject({ kernel_image_path: vm.kernelFile });
    expect(cfg.drives).toEqual([
      expect.objectContaining({ drive_id: "rootfs", path_on_host: rootfs, is_read_only: true }),
    ]);
    expect(cfg["machine-config"]).toMatchObject({
      vcpu_count: expect.any(Number),
      mem_size_mib: expect.any(Number),
      smt: false,
    });
    expect(Object.keys(cfg)).toEqual(
      expect.arrayContaining([
        "balloon",
        "drives",
        "boot-source",
        "logger",
        "machine-config",
        "metrics",
        "mmds-config",
        "network-interfaces",
        "vsock",
      ]),
    );
  });
});
