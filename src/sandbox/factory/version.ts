/** Templates and snapshots record the cocoon version that made them; another version refuses them. */
export { COCOON_VERSION } from "../../package-root.js";
