import { test, expect, APIRequestContext, Page } from "@playwright/test";
import fs from "node:fs/promises";
import { fitsAndShot } from "./fixtures";

// The 用量 tab (src/app/usage.rs): numbers from the ledger's daily rollup, charts drawn on
// the server as SVG, the latest requests, a CSV export. The server runs open (no access
// code exists), so this browser sees everything, as an admin would.

/// A few chats through the streaming endpoint, as a script would send them (JSON, no
/// Origin): two answers and one refused by the provider, so the ledger has both outcomes.
async function seed(request: APIRequestContext) {
  for (const content of ["用量测试一", "用量测试二 [[fake:deepseek]]", "用量测试三 [[fake:status=400]]"]) {
    const response = await request.post("/api/chat/stream", {
      data: { messages: [{ role: "user", content }] },
    });
    // Read the stream to its end: the ledger row is written when the chat ends.
    await response.text();
  }
}

/// Records CSP violations, reported by the page and by the console.
async function watchCsp(page: Page) {
  const violations: string[] = [];
  await page.exposeFunction("__reportCsp", (v: string) => violations.push(v));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      (window as any).__reportCsp(`${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`),
    );
  });
  page.on("console", (msg) => {
    if (/Content Security Policy|Content-Security-Policy/i.test(msg.text())) violations.push(msg.text());
  });
  return violations;
}

/// Opens the tab and waits for the report (the ledger writer batches rows for up to
/// 200 ms, so the first look may come too early: look again).
async function openUsage(page: Page, query = "") {
  await expect(async () => {
    await page.goto(`/usage${query}`);
    await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
    await expect(page.getByTestId("usage-requests")).toBeVisible({ timeout: 5_000 });
  }).toPass({ timeout: 30_000 });
}

const CHARTS = ["spend", "tokens", "requests", "ttft"];

test.beforeAll(async ({ request }) => {
  await seed(request);
});

test("the usage tab shows charts, totals and the latest requests without CSP violations", async ({ page }) => {
  const violations = await watchCsp(page);
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(err.message));

  // Reached through the tab bar: a client-side navigation.
  await page.goto("/");
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  await page.getByRole("link", { name: "用量" }).click();
  await expect(page).toHaveURL(/\/usage$/);
  await expect(page.getByRole("link", { name: "用量" })).toHaveAttribute("aria-current", "page");
  await expect(page.getByTestId("usage")).toHaveAttribute("data-days", "7");
  await openUsage(page);

  await expect(page.getByTestId("usage-scope")).toContainText("全部用量");
  const requests = Number(await page.getByTestId("usage-requests").textContent());
  expect(requests).toBeGreaterThanOrEqual(3);
  await expect(page.getByTestId("usage-cost")).toHaveText(/^¥\d+(\.\d+)?$/);

  for (const key of CHARTS) {
    const chart = page.getByTestId(`chart-${key}`);
    await expect(chart.locator("svg")).toHaveCount(1);
    await expect(chart.locator(".chart-svg")).toHaveAttribute("aria-label", /.+/);
  }
  // The SVG obeys the page's CSP: no inline styles, no scripts.
  await expect(page.locator(".chart-svg [style], .chart-svg script")).toHaveCount(0);
  // Days in Beijing time along the bottom, today last.
  const today = new Date(Date.now() + 8 * 3600_000).toISOString().slice(5, 10);
  await expect(page.getByTestId("chart-spend").locator("svg text", { hasText: today })).toHaveCount(1);

  const rows = page.getByTestId("usage-recent").locator("tbody tr");
  expect(await rows.count()).toBeGreaterThanOrEqual(3);
  await expect(rows.first()).toContainText("fake-model");
  await expect(page.getByTestId("usage-recent")).toContainText("完成");
  await expect(page.getByTestId("usage-recent")).toContainText("出错");
  // An admin (here: the open server) sees the per-code table.
  await expect(page.getByTestId("usage-by-code")).toContainText("无访问码");

  // 7 ↔ 30 days: the URL keeps the range; the report follows.
  await page.getByRole("link", { name: "近 30 天" }).click();
  await expect(page).toHaveURL(/\/usage\?days=30$/);
  await expect(page.getByTestId("usage")).toHaveAttribute("data-days", "30");
  await expect(page.getByRole("link", { name: "近 30 天" })).toHaveAttribute("aria-current", "true");
  for (const key of CHARTS) await expect(page.getByTestId(`chart-${key}`).locator("svg")).toHaveCount(1);
  await page.getByRole("link", { name: "近 7 天" }).click();
  await expect(page.getByTestId("usage")).toHaveAttribute("data-days", "7");

  // The CSV export: a server function's text saved through a Blob URL.
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("usage-csv").click()]);
  expect(download.suggestedFilename()).toMatch(/^streamai-usage-\d{4}-\d{2}-\d{2}-\d{4}-\d{2}-\d{2}\.csv$/);
  const bytes = await fs.readFile(await download.path());
  // A UTF-8 BOM first, so that spreadsheets read the Chinese right.
  expect([...bytes.subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf]);
  const csv = bytes.subarray(3).toString("utf8");
  const lines = csv.trim().split("\n");
  expect(lines[0]).toBe("time,day,code_id,code_name,provider,model,key_id,prompt_tokens,completion_tokens,reasoning_tokens,usage_source,cost_yuan,first_token_ms,duration_ms,retries,outcome");
  expect(lines.length).toBeGreaterThanOrEqual(4);
  expect(csv).toContain("+08:00");
  expect(csv).not.toMatch(/sk-e2e/);

  expect(violations).toEqual([]);
  expect(errors).toEqual([]);
});

test("the server renders a placeholder; the data is a server function", async ({ request }) => {
  const response = await request.get("/usage");
  expect(response.status()).toBe(200);
  const html = await response.text();
  expect(html).toContain("正在读取用量…");
  expect(html).toMatch(/<a href="\/usage"[^>]*aria-current="page"[^>]*>用量<\/a>/);

  // The same numbers as data, for scripts: a JSON POST like every server function.
  const data = await request.post("/api/usage", { data: { days: 30 } });
  expect(data.status()).toBe(200);
  const view = await data.json();
  expect(view.days).toBe(30);
  expect(view.totals.requests).toBeGreaterThanOrEqual(3);
  expect(view.charts.map((c: { key: string }) => c.key)).toEqual(CHARTS);
  for (const chart of view.charts) expect(chart.svg).not.toMatch(/style=|<script/i);
});

for (const width of [1280, 375]) {
  test(`usage screenshot at ${width}px`, async ({ page }, testInfo) => {
    await page.setViewportSize({ width, height: width < 500 ? 800 : 900 });
    await openUsage(page);
    for (const key of CHARTS) await expect(page.getByTestId(`chart-${key}`).locator("svg")).toHaveCount(1);
    // The charts stay legible: their text is at least 9 px tall on screen.
    const smallest = await page.evaluate(() =>
      Math.min(...[...document.querySelectorAll(".chart-svg svg text")].map((t) => t.getBoundingClientRect().height)),
    );
    expect(smallest).toBeGreaterThanOrEqual(9);
    await fitsAndShot(page, testInfo, `usage-${width}`);
  });
}
