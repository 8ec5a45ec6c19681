import { messageOf } from "../../errors.js";
import { controllerReport } from "./layout.js";

/** `cocoon check`: which controllers a sandbox's host cgroups can use here. */
export async function cgroupControllersCheck(): Promise<{
  id: string;
  title: string;
  status: "ok" | "warn";
  detail: string;
}> {
  const id = "cgroups.controllers";
  const title = "Sandbox cgroup controllers";
  try {
    const r = await controllerReport();
    const where = r.version === 2 ? "v2" : r.hybrid ? "v1 (hybrid host)" : "v1";
    const essential = r.missing.filter((c) => c !== "blkio" && c !== "cpuacct");
    const parts = [`${where}: usable ${r.usable.join(", ") || "none"}`];
    if (r.missing.length) parts.push(`missing ${r.missing.join(", ")}`);
    if (r.problem) parts.push(r.problem);
    return { id, title, status: r.problem || essential.length ? "warn" : "ok", detail: parts.join("; ") };
  } catch (err) {
    return { id, title, status: "warn", detail: messageOf(err) };
  }
}
