import { chmod, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { ParsedContainerMount } from "../../agent/protocol/container-setup.js";
import { bind, type OciMount } from "./oci.js";

/**
 * Turns the host's mount requests into OCI mounts runc can make in the guest: filesystems pass
 * through; a copied host file is written into the bundle (`files/`) and bind-mounted from there,
 * so it goes when the bundle does.
 */
export async function containerMounts(
  bundle: string,
  requested: ParsedContainerMount[],
): Promise<OciMount[]> {
  const out: OciMount[] = [];
  const filesDir = path.join(bundle, "files");
  for (const [index, m] of requested.entries()) {
    if (m.kind === "filesystem") {
      out.push({ destination: m.destination, type: m.type, source: m.source, options: m.options });
      continue;
    }
    await mkdir(filesDir, { recursive: true, mode: 0o700 });
    const file = path.join(filesDir, String(index));
    await writeFile(file, Buffer.from(m.content, "base64"));
    // writeFile's mode is filtered by the umask: set the file's own mode exactly.
    await chmod(file, m.mode);
    out.push(bind(file, m.destination, m.readOnly));
  }
  return out;
}
