import { defineConfig } from "@playwright/test";
import path from "node:path";
import base from "./playwright.config";

// The browser benchmark: same browser and servers as the tests, but release binaries
// (scripts/bench.sh builds them) and the bench/ folder. It prints figures; it is not part
// of the test suite.
const root = path.resolve(__dirname, "..");
const release = (cmd: string) => cmd.replace(path.join(root, "target/debug"), path.join(root, "target/release"));

export default defineConfig({
  ...base,
  testDir: "./bench",
  timeout: 180_000,
  webServer: (base.webServer as any[]).map((server) => ({ ...server, command: release(server.command) })),
});
