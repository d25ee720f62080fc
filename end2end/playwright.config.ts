import { defineConfig, devices } from "@playwright/test";
import path from "node:path";

// The browser is Debian's Chromium (`scripts/setup.sh --test` installs it); Playwright never
// downloads one. The servers are the real binaries that `cargo leptos build` produced.
const root = path.resolve(__dirname, "..");
const appPort = Number(process.env.E2E_APP_PORT ?? 3100);
export const fakePort = Number(process.env.E2E_FAKE_PORT ?? 3199);

export default defineConfig({
  testDir: "./tests",
  outputDir: "./test-results",
  timeout: 60_000,
  expect: { timeout: 15_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  use: {
    baseURL: `http://127.0.0.1:${appPort}`,
    trace: "retain-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
  projects: [{ name: "chromium", use: { ...devices["Desktop Chrome"] } }],
  webServer: [
    {
      command: path.join(root, "target/debug/streamai"),
      cwd: root,
      url: `http://127.0.0.1:${appPort}/`,
      reuseExistingServer: false,
      timeout: 60_000,
      stdout: "pipe",
      stderr: "pipe",
      env: {
        LEPTOS_OUTPUT_NAME: "streamai",
        LEPTOS_SITE_ROOT: "target/site",
        LEPTOS_SITE_PKG_DIR: "pkg",
        LEPTOS_SITE_ADDR: `127.0.0.1:${appPort}`,
        LEPTOS_RELOAD_PORT: String(appPort + 1),
        LEPTOS_ENV: "PROD",
        RUST_LOG: "streamai=info",
      },
    },
  ],
});
