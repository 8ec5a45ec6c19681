import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { chooseAccelerator, type AccelProbePaths } from "./accel.js";

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

// /dev/null is a character device anyone can open read-write: a stand-in for a usable /dev/kvm.
const usableKvm = "/dev/null";

async function paths(kvm: "usable" | "absent" | "file", pvm: boolean): Promise<AccelProbePaths> {
  let kvmDevice = path.join(dir, "no-kvm");
  if (kvm === "usable") kvmDevice = usableKvm;
  if (kvm === "file") {
    kvmDevice = path.join(dir, "kvm");
    await writeFile(kvmDevice, "");
  }
  const pvmModule = path.join(dir, "kvm_pvm");
  if (pvm) await mkdir(pvmModule);
  return { kvmDevice, pvmModule };
}

describe("chooseAccelerator", () => {
  it("auto picks TCG on a PVM host and says why", async () => {
    const choice = await chooseAccelerator("auto", await paths("usable", true));
    expect(choice).toMatchObject({ accelerator: "tcg", pvmHost: true, kvmUsable: true });
    expect(choice.reason).toMatch(/PVM host/);
  });

  it("auto picks KVM where it is usable and not PVM", async () => {
    const choice = await chooseAccelerator("auto", await paths("usable", false));
    expect(choice).toMatchObject({ accelerator: "kvm", pvmHost: false });
    expect(choice.warning).toBeUndefined();
  });

  it("auto falls back to TCG without /dev/kvm or when it is not a device", async () => {
    expect((await chooseAccelerator("auto", await paths("absent", false))).accelerator).toBe("tcg");
    const notDevice = await chooseAccelerator("auto", await paths("file", false));
    expect(notDevice).toMatchObject({ accelerator: "tcg", kvmPresent: true, kvmUsable: false });
  });

  it("kvm forced on a PVM host is honoured with a warning about the guest kernel", async () => {
    const choice = await chooseAccelerator("kvm", await paths("usable", true));
    expect(choice.accelerator).toBe("kvm");
    expect(choice.warning).toMatch(/only PVM-enabled guest kernels/);
  });

  it("tcg forced is always TCG", async () => {
    expect((await chooseAccelerator("tcg", await paths("usable", false))).accelerator).toBe("tcg");
  });

  it("reports this machine: a PVM host, so auto is TCG", async () => {
    const choice = await chooseAccelerator("auto");
    if (choice.pvmHost) expect(choice.accelerator).toBe("tcg");
    expect(["kvm", "tcg"]).toContain(choice.accelerator);
  });
});
