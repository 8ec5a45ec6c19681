import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
/** Templates and snapshots record the cocoon version that made them; another version refuses them. */
export const COCOON_VERSION = (require("../../../package.json") as { version: string }).version;
