// A fake cocoon-acrn-platform-info helper for contract tests: same command line, exit codes
// and output as src/vmm/acrn/platform-info.c, but the structure comes from the environment
// instead of the VHM ioctl. The device path must exist (a missing one exits 2, as the real
// helper does when /dev/acrn_vhm is absent).
//
// Knobs: FAKE_ACRN_MAX_KATA (default 8), FAKE_ACRN_CPUS (default 4),
//        FAKE_ACRN_PLATFORM_EXIT=<code> to fail with that exit status.
import { existsSync } from "node:fs";
import { die, recordInvocation } from "./common.js";

const argv = process.argv.slice(2);
recordInvocation("platform-info", argv);
if (argv.length > 1) die(64, "usage: cocoon-acrn-platform-info [device]");
const device = argv[0] ?? "/dev/acrn_vhm";
const forced = process.env.FAKE_ACRN_PLATFORM_EXIT;
if (forced) die(Number(forced), `fake platform-info: failing with exit ${forced} on ${device}`);
if (!existsSync(device)) die(2, `cannot open ${device}: No such file or directory`);

// The VHM ABI's struct platform_info, written field by field (independently of cocoon's decoder).
const info = Buffer.alloc(256);
info.writeUInt16LE(Number(process.env.FAKE_ACRN_CPUS ?? 4), 0); // cpu_num
info.writeUInt16LE(0x100, 2); // version 1.0
info.writeUInt16LE(8, 128); // max_vcpus_per_vm
info.writeUInt8(Number(process.env.FAKE_ACRN_MAX_KATA ?? 8), 130); // max_kata_containers
info.writeUInt16LE(16, 138); // max_vms
info.writeUInt32LE(4096, 140); // vm_config_entry_size
process.stdout.write(info.toString("hex") + "\n");
