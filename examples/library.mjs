// A sandbox from TypeScript/JavaScript: boot a VM, run commands in it, tear it down.
// Run from the checkout after `npm install`:  node examples/library.mjs
import { Runtime } from "cocoon";

const runtime = await Runtime.open(); // configuration: --config/COCOON_CONFIG, /etc/cocoon/config.toml, or defaults
const sandbox = await runtime.createSandbox({ memoryMB: 512, process: { args: ["sleep", "3600"] } });
try {
  await sandbox.start();
  const proc = await sandbox.exec({ process: { args: ["sh", "-c", "echo hello from $(uname -sr)"] } });
  const { stdout, exit } = await proc.output();
  console.log(stdout.toString().trim(), `(exit ${exit.exitCode})`);
} finally {
  await sandbox.delete({ force: true });
}
