import { defineConfig, devices } from "@playwright/test";
import os from "node:os";
import path from "node:path";

// The browser is Debian's Chromium (`scripts/setup.sh --test` installs it); Playwright never
// downloads one. The servers are the real binaries that `cargo leptos build --split` produced.
const root = path.resolve(__dirname, "..");
const appPort = Number(process.env.E2E_APP_PORT ?? 3100);
export const fakePort = Number(process.env.E2E_FAKE_PORT ?? 3199);
const accessPort = Number(process.env.E2E_ACCESS_PORT ?? appPort + 10);
const accessDir = path.join(os.tmpdir(), `streamai-e2e-access-${accessPort}`);
const providersPort = Number(process.env.E2E_PROVIDERS_PORT ?? appPort + 20);
const providersDir = path.join(os.tmpdir(), `streamai-e2e-providers-${providersPort}`);
const appDir = path.join(os.tmpdir(), `streamai-e2e-app-${appPort}`);

/// The app server on `port`, with `env` on top of the settings every test server shares.
function appServer(port: number, env: Record<string, string> = {}, before = "") {
  return {
    command: `${before}${path.join(root, "target/debug/streamai")}`,
    cwd: root,
    url: `http://127.0.0.1:${port}/`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: "pipe" as const,
    stderr: "pipe" as const,
    env: {
      LEPTOS_OUTPUT_NAME: "streamai",
      LEPTOS_SITE_ROOT: "target/site",
      LEPTOS_SITE_PKG_DIR: "pkg",
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      LEPTOS_RELOAD_PORT: String(port + 1),
      LEPTOS_ENV: "PROD",
      RUST_LOG: "streamai=info",
      // The provider is the fake upstream above, through the real HTTP path.
      LLM_PROVIDER: "custom",
      LLM_MODEL: "fake-model",
      CUSTOM_FREE_MODELS: "fake-model",
      CUSTOM_BASE_URL: `http://127.0.0.1:${fakePort}/v1`,
      CUSTOM_API_KEY: "sk-e2e-fake-key-0123456789abcdef",
      LLM_RETRY_MIN_MS: "200",
      LLM_RETRY_MAX_MS: "1000",
      LLM_TIMEOUT_SECS: "10",
      ...env,
    },
  };
}

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
  projects: [
    { name: "chromium", use: { ...devices["Desktop Chrome"] }, testIgnore: /(access|providers)\.spec\.ts/ },
    {
      name: "access",
      use: { ...devices["Desktop Chrome"], baseURL: `http://127.0.0.1:${accessPort}` },
      testMatch: /access\.spec\.ts/,
    },
    {
      name: "providers",
      use: { ...devices["Desktop Chrome"], baseURL: `http://127.0.0.1:${providersPort}` },
      testMatch: /providers\.spec\.ts/,
    },
  ],
  webServer: [
    {
      // The fake OpenAI-compatible provider; tests pick its behaviour with [[fake:…]] markers.
      command: `${path.join(root, "target/debug/fake-upstream")} 127.0.0.1:${fakePort} openai`,
      cwd: root,
      url: `http://127.0.0.1:${fakePort}/__fake/requests`,
      reuseExistingServer: false,
      timeout: 30_000,
    },
    // Every run starts from an empty database (removed before the server starts).
    appServer(appPort, { DATABASE_URL: `sqlite://${appDir}/streamai.db` }, `rm -rf '${appDir}' && exec `),
    // The access-code tests create codes, after which every API call needs one: they run
    // against a server of their own, on a fresh database (removed before it starts).
    appServer(accessPort, { DATABASE_URL: `sqlite://${accessDir}/streamai.db` }, `rm -rf '${accessDir}' && exec `),
    // Several providers (all played by the fake), with the test model table: the 深度思考
    // switch per provider, fallback chains and continuation.
    appServer(
      providersPort,
      {
        DATABASE_URL: `sqlite://${providersDir}/streamai.db`,
        STREAMAI_SETTINGS: "tests/fixtures/settings.toml",
        LLM_MODEL: "fake-chain-a",
        CUSTOM_FREE_MODELS: "",
        DEEPSEEK_API_KEY: "sk-e2e-deepseek-key-0123456789abcdef",
        DEEPSEEK_BASE_URL: `http://127.0.0.1:${fakePort}/v1`,
        QWEN_API_KEY: "sk-e2e-qwen-key-0123456789abcdef",
        QWEN_BASE_URL: `http://127.0.0.1:${fakePort}/v1`,
      },
      `rm -rf '${providersDir}' && exec `,
    ),
  ],
});
