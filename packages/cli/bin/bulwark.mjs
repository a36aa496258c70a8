#!/usr/bin/env node
// Runs the TypeScript sources directly, so `npm install` is all a user needs.
import { register } from "tsx/esm/api"

register()
await import("../src/bin.ts")
