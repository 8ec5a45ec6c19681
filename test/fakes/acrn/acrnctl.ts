// A fake acrnctl for contract tests. Only `blkrescan` is emulated (the one command cocoon
// uses): like the real tool it finds the VM by name among the running device models, sends
// the request to that acrn-dm's monitor socket, and fails when the device model refuses
// (unknown slot, not a virtio-blk placeholder, a path containing "nodisk", a missing file).
import net from "node:net";
import { die, monitorPath, recordInvocation, stateDir, type MonitorReply } from "./common.js";

const argv = process.argv.slice(2);
recordInvocation("acrnctl", argv);

const COMMANDS = ["list", "start", "stop", "del", "add", "reset", "blkrescan"];
const [cmd, ...args] = argv;

if (cmd === undefined || cmd === "help") {
  process.stdout.write(
    `support:\n${COMMANDS.map((c) => `  ${c}\n`).join("")}Use acrnctl [cmd] help for details\n`,
  );
  process.exit(cmd === undefined ? 1 : 0);
}
if (!COMMANDS.includes(cmd)) die(1, `acrnctl: unknown command ${cmd}`);
if (cmd !== "blkrescan") die(1, `fake acrnctl: "${cmd}" is not emulated`);
if (args.length !== 2 || args[0] === "help") die(1, "acrnctl blkrescan <vm_name> <slot,newfilepath>");

const [vmName, devargs] = args as [string, string];
const dir = stateDir("acrnctl");

const reply = await new Promise<MonitorReply>((resolve) => {
  const conn = net.connect(monitorPath(dir, vmName));
  let buf = "";
  conn.on("connect", () => conn.write(JSON.stringify({ cmd: "blkrescan", devargs }) + "\n"));
  conn.on("data", (c) => (buf += c.toString("utf8")));
  conn.on("end", () => {
    try {
      resolve(JSON.parse(buf) as MonitorReply);
    } catch {
      resolve({ err: -1, message: `bad answer from ${vmName}'s device model` });
    }
  });
  // No monitor socket, or nobody behind it: the VM is not running.
  conn.on("error", () => die(1, `can't find ${vmName}`));
});

if (reply.err !== 0) die(1, `blkrescan ${vmName} ${devargs} failed: ${reply.message}`);
process.stdout.write(`${reply.message}\n`);
