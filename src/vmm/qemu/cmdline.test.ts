import { describe, expect, it } from "vitest";
import { buildQemuArgs, type QemuVmSpec } from "./cmdline.js";

const base: QemuVmSpec = {
  name: "sandbox-a",
  machine: { type: "microvm", accel: "tcg" },
  cpu: { model: "max" },
  smp: { cpus: 1, maxCpus: 4 },
  memory: { sizeMiB: 512, slots: 10, maxMiB: 2048 },
  kernel: { path: "/k/bzImage", append: "console=ttyS0 quiet" },
  drives: [{ id: "rootfs", file: "/i/root,fs.ext4", format: "raw", readOnly: true, bus: "virtio-blk" }],
  scsiController: { id: "scsi0" },
  serialPorts: [{ id: "agent0", name: "cocoon.agent.0", socketPath: "/vm/agent.0.sock" }],
  console: { socketPath: "/vm/console.sock", logFile: "/vm/console.log" },
  qmpSocket: "/vm/qmp.sock",
  pidFile: "/vm/qemu.pid",
  rng: { source: "/dev/urandom" },
};

describe("QEMU command line", () => {
  it("builds a microvm line with mmio devices (golden)", () => {
    // prettier-ignore
    expect(buildQemuArgs(base)).toEqual([
      "-name", "sandbox-a,debug-threads=on",
      "-machine", "microvm,x-option-roms=off,rtc=on,isa-serial=on,acpi=on",
      "-accel", "tcg",
      "-cpu", "max",
      "-smp", "cpus=1,maxcpus=1",
      "-m", "512M",
      "-kernel", "/k/bzImage",
      "-append", "console=ttyS0 quiet",
      "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
      "-global", "virtio-mmio.force-legacy=false",
      "-chardev", "socket,id=qmp,path=/vm/qmp.sock,server=on,wait=off",
      "-mon", "chardev=qmp,mode=control",
      "-chardev", "socket,id=console,path=/vm/console.sock,server=on,wait=off,logfile=/vm/console.log,logappend=on",
      "-serial", "chardev:console",
      "-device", "virtio-scsi-device,id=scsi0",
      "-drive", "if=none,id=rootfs,file=/i/root,,fs.ext4,format=raw,readonly=on",
      "-device", "virtio-blk-device,id=dev-rootfs,drive=rootfs",
      "-device", "virtio-serial-device,id=vserial0",
      "-chardev", "socket,id=agent0,path=/vm/agent.0.sock,server=on,wait=off",
      "-device", "virtserialport,chardev=agent0,name=cocoon.agent.0,bus=vserial0.0",
      "-object", "rng-random,id=rng0,filename=/dev/urandom",
      "-device", "virtio-rng-device,rng=rng0",
      "-pidfile", "/vm/qemu.pid",
    ]);
  });

  it("uses PCI devices, memory hotplug and root ports on q35", () => {
    const args = buildQemuArgs({
      ...base,
      machine: { type: "q35", accel: "kvm", extraOptions: ["nosmm"] },
      cpu: { model: "host" },
      pcieRootPorts: 2,
    });
    const joined = args.join(" ");
    expect(joined).toContain("-machine q35,nosmm");
    expect(joined).toContain("-smp cpus=1,maxcpus=4");
    expect(joined).toContain("-m 512M,slots=10,maxmem=2048M");
    expect(joined).toContain("virtio-blk-pci,id=dev-rootfs");
    expect(joined).toContain("-device pcie-root-port,id=rp1,bus=pcie.0,chassis=2,slot=2");
    expect(joined).not.toContain("force-legacy");
  });

  it("adds shared memory and vhost-user-fs for virtio-fs, 9p shares and SCSI drives", () => {
    const args = buildQemuArgs({
      ...base,
      memory: { sizeMiB: 256, shared: true },
      drives: [
        ...base.drives,
        { id: "d1", file: "/d1", format: "raw", readOnly: false, bus: "scsi", lun: 3, cacheDirect: true },
      ],
      virtiofs: [{ id: "vfs0", socketPath: "/vm/vfs.sock", tag: "cocoon", queueSize: 1024 }],
      shares9p: [{ id: "fs0", path: "/share", tag: "s9", readOnly: true }],
    }).join(" ");
    expect(args).toContain(
      "-machine microvm,x-option-roms=off,rtc=on,isa-serial=on,acpi=on,memory-backend=mem",
    );
    expect(args).toContain("-object memory-backend-memfd,id=mem,size=256M,share=on");
    expect(args).toContain("-device vhost-user-fs-device,chardev=vfs0,tag=cocoon,queue-size=1024");
    expect(args).toContain(
      "-fsdev local,id=fs0,path=/share,security_model=none,readonly=on -device virtio-9p-device,fsdev=fs0,mount_tag=s9",
    );
    expect(args).toContain("-drive if=none,id=d1,file=/d1,format=raw,cache.direct=on");
    expect(args).toContain("-device scsi-hd,id=dev-d1,drive=d1,bus=scsi0.0,channel=0,scsi-id=0,lun=3");
  });

  it("refuses a SCSI drive without a controller", () => {
    expect(() =>
      buildQemuArgs({
        ...base,
        scsiController: undefined,
        drives: [{ id: "x", file: "/x", format: "raw", readOnly: false, bus: "scsi" }],
      }),
    ).toThrow(/no SCSI controller/);
  });
});
