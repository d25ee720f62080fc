import { test, expect, Page } from "@playwright/test";
import { fakeRecords, hydrated, screenshots } from "./fixtures";

// The 服务配置 tab (src/app/settings.rs): per provider a model table (prices, limits,
// 深度思考, fallback chain, 续写) and the keys' live state, read after hydration through
// the `key_states` server function, again every 5 s and on 刷新.

/// The one key every test server has (playwright.config.ts).
const KEY = "sk-e2e-fake-key-0123456789abcdef";
/// How long the fake's 429 cools the key's account.
const COOL_SECS = 12;

const keyRows = (page: Page) => page.getByTestId("key-row");


/// Seconds since midnight of `HH:MM:SS`.
const clock = (text: string) => {
  const [h, m, s] = text.split(":").map(Number);
  return h * 3600 + m * 60 + s;
};

test("the settings tab shows the model table and the keys' live state", async ({ page }, testInfo) => {
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(err.message));
  page.on("console", (msg) => {
    if (/hydration|panicked|disposed|unreachable/i.test(msg.text())) errors.push(msg.text());
  });
  // Reached through the tab bar (rendered in the browser), then loaded whole (hydrated).
  await page.goto("/");
  await hydrated(page);
  await page.getByRole("link", { name: "服务配置" }).click();
  await expect(keyRows(page)).toHaveCount(1);
  await page.reload();
  await hydrated(page);

  const custom = page.locator('[data-testid=provider-card][data-provider="custom"]');
  const models = custom.getByTestId("model-row");
  await expect(models.first()).toBeVisible();
  const fake = custom.locator('[data-testid=model-row][data-model="fake-model"]');
  await expect(fake).toContainText("默认");
  await expect(fake.getByTestId("fallback-chain")).toHaveText(/—|→/);
  await expect(custom.getByRole("columnheader", { name: "备用链" })).toBeVisible();

  await expect(keyRows(page)).toHaveCount(1);
  await expect(keyRows(page).first()).toContainText("key#1 ••••cdef");
  await expect(keyRows(page).first()).toHaveAttribute("data-state", /rotation|cooling|parked/);
  expect(await page.content()).not.toContain(KEY);
  await screenshots(page, testInfo, "settings");
  expect(errors).toEqual([]);
});

test("a 429 shows the key cooling until its Beijing time, then back in rotation", async ({ page, request }, testInfo) => {
  const before = (await fakeRecords(request)).length;
  // A chat the fake refuses once with 429: the key's account cools, the answer waits.
  const prompt = `设置页冷却测试 ${Date.now()} [[fake:openai status=429 times=1 retry_after=${COOL_SECS}]]`;
  const chat = request.post("/api/chat/stream", { data: { messages: [{ role: "user", content: prompt }] } });
  await expect.poll(async () => (await fakeRecords(request)).slice(before).some((r) => r.status === 429)).toBe(true);
  const cooledAt = Date.now();

  await page.goto("/settings");
  await hydrated(page);
  const row = keyRows(page).first();
  await expect(row).toHaveAttribute("data-state", "cooling");
  const text = (await row.textContent()) ?? "";
  const match = text.match(/冷却中，至 (\d{2}:\d{2}:\d{2})（北京时间）/);
  expect(match, text).not.toBeNull();
  // The shown end is Beijing time (UTC+8), about COOL_SECS after the 429.
  const expected = new Date(cooledAt + 8 * 3600_000 + COOL_SECS * 1000).toISOString().slice(11, 19);
  const off = Math.abs(clock(match![1]) - clock(expected)) % (24 * 3600);
  expect(Math.min(off, 24 * 3600 - off)).toBeLessThanOrEqual(3);
  await screenshots(page, testInfo, "settings-cooling");

  // The answer comes once the cooldown is over; 刷新 shows the key back in rotation.
  expect((await chat).status()).toBe(200);
  await (await chat).text();
  await page.getByTestId("refresh-keys").first().click();
  await expect(row).toHaveAttribute("data-state", "rotation");
  await expect(row).toContainText("轮换中");
});
