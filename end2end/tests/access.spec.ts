// Access codes in the browser (project "access": its own server on a fresh database, see
// playwright.config.ts). The tests run in order and share the codes they create: the first
// (open) visitor creates the admin code on the 管理 page; from then on the server asks for a
// code, which the browser keeps in localStorage and sends as `Authorization: Bearer`.
import { test, expect, Page } from "@playwright/test";
import { screenshots } from "./fixtures";

test.describe.configure({ mode: "serial" });

const CODE = /^sk-liu-[0-9a-f]{32}$/;
const ANY_CODE = /sk-liu-[0-9a-f]{32}/;
let adminCode = "";
let revokedCode = "";
let userCode = "";

async function hydrated(page: Page) {
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
}

const prompt = (page: Page) => page.getByTestId("access-prompt");

async function enterCode(page: Page, code: string) {
  await prompt(page).getByLabel("访问码").fill(code);
  await prompt(page).getByRole("button", { name: "确定" }).click();
}

async function createCode(page: Page, fields: { name: string; daily?: string; monthly?: string; rpm?: string; admin?: boolean }) {
  const form = page.getByTestId("create-code");
  await form.getByTestId("name").fill(fields.name);
  await form.getByTestId("daily").fill(fields.daily ?? "");
  await form.getByTestId("monthly").fill(fields.monthly ?? "");
  await form.getByTestId("rpm").fill(fields.rpm ?? "");
  await form.getByTestId("admin").setChecked(fields.admin ?? false);
  await form.getByRole("button", { name: "创建" }).click();
  const box = page.getByTestId("new-code");
  await expect(box).toContainText(`新访问码：${fields.name}`);
  await expect(box).toContainText("只显示这一次");
  const code = (await box.getByTestId("new-code-value").textContent()) ?? "";
  expect(code).toMatch(CODE);
  await box.getByRole("button", { name: "我已保存，关闭" }).click();
  await expect(box).toHaveCount(0);
  return code;
}

const row = (page: Page, name: string) =>
  page.getByTestId("code-row").filter({ has: page.getByTestId("code-name").getByText(name, { exact: true }) });


test("the first visitor of an open server creates the admin code on the 管理 page", async ({ page }) => {
  await page.goto("/");
  await hydrated(page);
  await page.evaluate(() => localStorage.clear());
  // Open server: everyone counts as admin, and no prompt.
  await page.getByRole("link", { name: "管理" }).click();
  await expect(page).toHaveURL(/\/admin$/);
  await expect(page.getByTestId("no-codes")).toBeVisible();
  await expect(prompt(page)).toHaveCount(0);

  // Money is parsed exactly; bad input is named in Chinese.
  const form = page.getByTestId("create-code");
  await form.getByTestId("name").fill("坏额度");
  await form.getByTestId("daily").fill("1.0000000000001");
  await form.getByRole("button", { name: "创建" }).click();
  await expect(form.getByTestId("form-error")).toContainText("每日额度必须是不超过 12 位小数的金额");
  await form.getByTestId("daily").fill("");
  await form.getByTestId("rpm").fill("0");
  await form.getByRole("button", { name: "创建" }).click();
  await expect(form.getByTestId("form-error")).toContainText("每分钟请求数必须是正整数");
  await form.getByTestId("rpm").fill("");

  adminCode = await createCode(page, { name: "管理员", admin: true });
  await expect(row(page, "管理员")).toContainText("管理员");
  await expect(page.getByTestId("code-row")).toHaveCount(1);
  // The plaintext was shown once; it is nowhere on the page now.
  expect(await page.content()).not.toContain(adminCode);
});

test("the server now asks for the code: a wrong one is refused, the right one opens the chat", async ({ page, request }, testInfo) => {
  // Without a code every API call is 401 with the reason in JSON.
  const refused = await request.post("/api/whoami", { data: {} });
  expect(refused.status()).toBe(401);
  expect((await refused.json()).error.code).toBe("auth_required");

  await page.goto("/");
  await hydrated(page);
  await expect(prompt(page)).toBeVisible();
  await expect(prompt(page).getByRole("heading", { name: "请输入访问码" })).toBeVisible();
  await expect(prompt(page).getByLabel("访问码")).toHaveAttribute("type", "password");
  await screenshots(page, testInfo, "access-prompt");

  // A code that cannot even travel in a header is refused in the browser.
  await enterCode(page, "sk-liu-中文");
  await expect(page.getByTestId("access-message")).toContainText("只能包含英文字母、数字和符号");
  await enterCode(page, "sk-liu-00000000000000000000000000000000");
  await expect(page.getByTestId("access-message")).toContainText("访问码无效");
  expect(await page.evaluate(() => localStorage.getItem("streamai.access_code"))).toBeNull();

  const bearers: string[] = [];
  page.on("request", (r) => {
    if (new URL(r.url()).pathname.startsWith("/api/")) bearers.push(r.headers()["authorization"] ?? "");
  });
  await enterCode(page, adminCode);
  await expect(prompt(page)).toHaveCount(0);
  await expect(page.getByTestId("access-name")).toHaveText("管理员");
  await expect(page.getByRole("link", { name: "管理" })).toBeVisible();

  const composer = page.getByTestId("composer");
  await composer.fill("你好，访问码 [[fake:openai]]");
  await composer.press("Enter");
  const answer = page.getByTestId("answer").last();
  await expect(answer).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  await expect(answer.getByTestId("answer-text")).toContainText("回答完毕");
  // Every API call (the whoami server function, the stream) carried the code.
  expect(bearers.length).toBeGreaterThanOrEqual(2);
  expect(bearers.every((b) => b === `Bearer ${adminCode}`)).toBe(true);

  // A reload keeps the code: no prompt.
  await page.reload();
  await hydrated(page);
  await expect(page.getByTestId("access-name")).toHaveText("管理员");
  await expect(prompt(page)).toHaveCount(0);
});

test("the admin lists, creates, limits and revokes codes; a revoked code is refused", async ({ page, request }, testInfo) => {
  await page.goto("/");
  await hydrated(page);
  await page.evaluate((code) => localStorage.setItem("streamai.access_code", code), adminCode);
  await page.reload();
  await hydrated(page);
  await page.getByRole("link", { name: "管理" }).click();
  await expect(row(page, "管理员")).toContainText("本浏览器正在使用");

  revokedCode = await createCode(page, { name: "张三", daily: "10", monthly: "100.5", rpm: "5" });
  userCode = await createCode(page, { name: "李四", daily: "0.000001" });
  expect(new Set([adminCode, revokedCode, userCode]).size).toBe(3);
  await expect(page.getByTestId("code-row")).toHaveCount(3);
  const zhang = row(page, "张三");
  await expect(zhang).toContainText("¥10（今日已用 ¥0）");
  await expect(zhang).toContainText("¥100.5（本月已用 ¥0）");
  await expect(row(page, "李四")).toContainText("¥0.000001");

  // Limits change in place.
  await zhang.getByRole("button", { name: "修改限额" }).click();
  const edit = zhang.getByTestId("edit-limits");
  await edit.getByTestId("daily").fill("20.25");
  await edit.getByRole("button", { name: "保存限额" }).click();
  await expect(zhang).toContainText("¥20.25（今日已用 ¥0）");

  // Revoked: two steps.
  await zhang.getByRole("button", { name: "停用" }).click();
  await zhang.getByTestId("confirm-revoke").click();
  await expect(zhang.getByTestId("code-status")).toContainText("已停用");
  // The admin cannot lock themself out.
  await row(page, "管理员").getByRole("button", { name: "停用" }).click();
  await row(page, "管理员").getByTestId("confirm-revoke").click();
  await expect(row(page, "管理员")).toContainText("不能停用你正在使用的访问码");
  await screenshots(page, testInfo, "admin");

  // A code that is not an admin's may not manage codes (403) and sees no 管理 tab.
  const forbidden = await request.post("/api/admin/list_codes", {
    data: {},
    headers: { authorization: `Bearer ${userCode}` },
  });
  expect(forbidden.status()).toBe(403);
  const revoked = await request.post("/api/whoami", { data: {}, headers: { authorization: `Bearer ${revokedCode}` } });
  expect(revoked.status()).toBe(401);
  expect((await revoked.json()).error.code).toBe("auth_revoked");

  // The chat's stream refused: the prompt says why, and the question is kept.
  await page.getByRole("link", { name: "流式AI" }).first().click();
  await expect(page.getByTestId("composer")).toBeVisible();
  const before = await page.getByTestId("user-message").count();
  await page.evaluate((code) => localStorage.setItem("streamai.access_code", code), revokedCode);
  const question = "这个问题不能丢 [[fake:openai]]";
  await page.getByTestId("composer").fill(question);
  await page.getByTestId("composer").press("Enter");
  await expect(page.getByTestId("access-message")).toContainText("访问码已被停用");
  await expect(page.getByTestId("composer")).toHaveValue(question);
  await expect(page.getByTestId("user-message")).toHaveCount(before);

  // The right code: the held question is sent, and answered.
  await enterCode(page, adminCode);
  await expect(prompt(page)).toHaveCount(0);
  await expect(page.getByTestId("user-message").last()).toContainText("这个问题不能丢");
  await expect(page.getByTestId("answer").last()).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  await expect(page.getByTestId("composer")).toHaveValue("");
});

test("a plain code sees no 管理 tab, and 退出/更换访问码 asks again", async ({ page }) => {
  await page.goto("/");
  await hydrated(page);
  await page.evaluate((code) => localStorage.setItem("streamai.access_code", code), userCode);
  await page.reload();
  await hydrated(page);
  await expect(page.getByTestId("access-name")).toHaveText("李四");
  await expect(page.getByRole("link", { name: "管理" })).toHaveCount(0);
  await page.goto("/admin");
  await hydrated(page);
  await expect(page.getByTestId("admin-page")).toContainText("需要管理员访问码");

  await page.getByRole("button", { name: "退出/更换访问码" }).click();
  await expect(prompt(page)).toBeVisible();
  expect(await page.evaluate(() => localStorage.getItem("streamai.access_code"))).toBeNull();
  await enterCode(page, revokedCode);
  await expect(page.getByTestId("access-message")).toContainText("访问码已被停用");
});

test("no code ever appears in the HTML the server renders", async ({ request }) => {
  for (const url of ["/", "/admin", "/settings", "/usage"]) {
    for (const headers of [{}, { authorization: `Bearer ${adminCode}` }]) {
      const response = await request.get(url, { headers });
      expect(response.status()).toBe(200);
      const html = await response.text();
      for (const code of [adminCode, revokedCode, userCode]) expect(html).not.toContain(code);
      expect(html).not.toMatch(ANY_CODE);
    }
  }
});
