import { test, expect } from "@playwright/test";
import { ANSWER, fitsAndShot, savedMessages } from "./fixtures";

// The page as the server renders it, before any JavaScript runs.
test("server renders the home page with its tabs", async ({ request }) => {
  const response = await request.get("/");
  expect(response.status()).toBe(200);
  const html = await response.text();
  expect(html).toContain('<html lang="zh-CN"');
  expect(html).toContain("<title>流式AI</title>");
  expect(html).toMatch(/<a href="\/"[^>]*aria-current="page"[^>]*>流式AI<\/a>/);
  expect(html).toContain('href="/settings"');
  expect(html).toContain("/pkg/streamai.js");
  expect(html).not.toMatch(/API_KEY=|sk-[A-Za-z0-9]{8,}/);
});

test("without JavaScript the page is readable", async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto("/settings");
  await expect(page.getByRole("heading", { name: "当前服务配置" })).toBeVisible();
  await expect(page.getByRole("link", { name: "服务配置" })).toHaveAttribute("aria-current", "page");
  await context.close();
});

test("after hydration tabs switch in the browser and the URL keeps the tab", async ({ page }) => {
  await page.goto("/");
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  // A marker on window survives client-side navigation but not a page load.
  await page.evaluate(() => ((window as any).__sameDocument = true));

  await page.getByRole("link", { name: "服务配置" }).click();
  await expect(page).toHaveURL(/\/settings$/);
  await expect(page.getByRole("heading", { name: "可用平台与价格" })).toBeVisible();
  await expect(page.getByRole("link", { name: "服务配置" })).toHaveAttribute("aria-current", "page");
  expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);

  await page.reload();
  await expect(page.getByRole("heading", { name: "可用平台与价格" })).toBeVisible();
  await expect(page.getByRole("link", { name: "服务配置" })).toHaveAttribute("aria-current", "page");

  await page.getByRole("link", { name: "流式AI" }).first().click();
  await expect(page).toHaveURL(/\/$/);
});

// Issue 13: the chat's first load carries only the main WASM; a tab's chunk is fetched when
// the tab is first opened (src/app/tabs.rs, `cargo leptos build --split`).
test("the chat loads no tab's WASM chunk until the tab is opened", async ({ page }) => {
  const wasm: string[] = [];
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (url.pathname.endsWith(".wasm")) wasm.push(url.pathname);
  });
  await page.goto("/");
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  expect([...new Set(wasm)]).toEqual(["/pkg/streamai.wasm"]);

  await page.getByRole("link", { name: "服务配置" }).click();
  await expect(page.getByRole("heading", { name: "可用平台与价格" })).toBeVisible();
  expect(wasm.some((path) => /\/pkg\/split_+settings_tab_view_\w+\.wasm$/.test(path))).toBe(true);
  expect(wasm.some((path) => /usage_tab|admin_tab/.test(path))).toBe(false);
});

test("an unknown path answers 404 with a way home", async ({ page }) => {
  const response = await page.goto("/no-such-page");
  expect(response?.status()).toBe(404);
  await expect(page.getByRole("heading", { name: "页面不存在" })).toBeVisible();
});

for (const width of [375, 1280]) {
  test(`screenshot at ${width}px`, async ({ page }, testInfo) => {
    await page.setViewportSize({ width, height: width < 500 ? 800 : 900 });
    await page.goto("/");
    await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
    await fitsAndShot(page, testInfo, `home-${width}`);
  });
}

// Issue 8: every page is served with a nonce CSP (src/server/security.rs). The page must work
// under it: hydration, tab switches (which call the `server_info` function with a JSON POST)
// and a streamed answer, with not one violation reported.
test("the app works under its Content Security Policy", async ({ page }) => {
  const violations: string[] = [];
  await page.exposeFunction("__reportCsp", (v: string) => violations.push(v));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      (window as any).__reportCsp(`${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`),
    );
  });
  const consoleCsp: string[] = [];
  page.on("console", (msg) => {
    if (/Content Security Policy|Content-Security-Policy/i.test(msg.text())) consoleCsp.push(msg.text());
  });

  const response = await page.goto("/");
  const policy = response?.headers()["content-security-policy"] ?? "";
  expect(policy).toMatch(/script-src 'self' 'nonce-[A-Za-z0-9_-]{22,}' 'wasm-unsafe-eval'/);
  expect(policy).toContain("frame-ancestors 'none'");
  expect(response?.headers()["x-content-type-options"]).toBe("nosniff");
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  await page.evaluate(() => localStorage.clear());

  // Client-side tab switch: the settings tab asks the server function in the browser.
  const info = page.waitForResponse((r) => r.url().endsWith("/api/server_info"));
  await page.getByRole("link", { name: "服务配置" }).click();
  const infoResponse = await info;
  expect(infoResponse.status()).toBe(200);
  expect(infoResponse.request().headers()["content-type"]).toContain("application/json");
  await expect(page.getByTestId("model")).toHaveText("fake-model");

  // Back to the chat tab, and a streamed answer.
  await page.getByRole("link", { name: "流式AI" }).first().click();
  await expect(page).toHaveURL(/\/$/);
  const composer = page.getByTestId("composer");
  await composer.fill("你好");
  await composer.press("Enter");
  const answer = page.getByTestId("answer").last();
  await expect(answer).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  expect((await savedMessages(page)).at(-1)?.content).toBe(ANSWER);
  await expect(answer.getByTestId("answer-text")).toContainText("回答完毕。");

  // A full load of the settings page hydrates too.
  await page.goto("/settings");
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByTestId("model")).toHaveText("fake-model");

  expect(violations).toEqual([]);
  expect(consoleCsp).toEqual([]);
});
