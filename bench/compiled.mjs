// Registers bench/compiled-hooks.mjs: Bulwark's own modules load from their compiled `dist/` (what users run)
// instead of the TypeScript sources, whichever way a benchmark imports them.
import { register } from "node:module"

register("./compiled-hooks.mjs", import.meta.url)
