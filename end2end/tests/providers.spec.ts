import { test, expect, Page, APIRequestContext } from "@playwright/test";
import path from "node:path";
import { ANSWER, FAKE, hydrated, openChat, ask, lastAnswer } from "./fixtures";

// A server of its own (project "providers"): the test model table, with DeepSeek and
// DashScope played by the fake too. The 深度思考 switch speaks each provider's dialect;
// a fallback chain says 已切换到 X（原因）; a cut answer is finished by the next model.

/// The request bodies the fake has seen, oldest first.
async function bodies(request: APIRequestContext) {
  const response = await request.get(`${FAKE}/__fake/requests`);
  const records = (await response.json()) as { scenario: string; body: Record<string, unknown> }[];
  return records.map((r) => r.body);
}

/// Picks `provider` and `model` in the parameter panel.
async function pick(page: Page, provider: string, model: string) {
  const panel = page.locator("details.params");
  if ((await panel.getAttribute("open")) === null) await panel.locator("summary").click();
  await page.getByLabel("平台").selectOption(provider);
  await page.getByLabel("模型").selectOption(model);
}

async function shot(page: Page, name: string, project: string) {
  await page.screenshot({ path: path.join(project, "screenshots", `${name}.png`), fullPage: true });
}

test("深度思考 appears only for models that can think, and reaches each provider in its dialect", async ({
  page,
  request,
}, testInfo) => {
  await openChat(page);
  const thinking = page.getByLabel("深度思考");

  await pick(page, "custom", "fake-chain-a");
  await expect(thinking).toHaveCount(0);

  // DashScope: the same model, with enable_thinking.
  await pick(page, "qwen", "qwen-plus");
  await expect(thinking).toBeVisible();
  await thinking.check();
  await shot(page, "thinking-switch", testInfo.project.outputDir);
  await ask(page, "通义 [[fake:reasoner]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  let sent = (await bodies(request)).at(-1)!;
  expect(sent.model).toBe("qwen-plus");
  expect(sent.enable_thinking).toBe(true);

  // A DashScope model without thinking: no switch, nothing sent.
  await pick(page, "qwen", "qwen-long");
  await expect(thinking).toHaveCount(0);
  await ask(page, "长文 [[fake:openai]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  sent = (await bodies(request)).at(-1)!;
  expect(sent.model).toBe("qwen-long");
  expect(sent).not.toHaveProperty("enable_thinking");

  // DeepSeek: thinking is another model, the reasoner.
  await pick(page, "deepseek", "deepseek-chat");
  await expect(thinking).toBeVisible();
  await thinking.check();
  await ask(page, "深度求索 [[fake:reasoner]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  await expect(lastAnswer(page).locator("details.reasoning")).toBeVisible();
  sent = (await bodies(request)).at(-1)!;
  expect(sent.model).toBe("deepseek-reasoner");
  expect(sent).not.toHaveProperty("temperature");
});

test("a fallback chain says 已切换到 X（原因） and the answer comes from the model that could", async ({
  page,
}, testInfo) => {
  await openChat(page);
  await pick(page, "custom", "fake-chain-a");
  await ask(page, "备用链 [[fake:openai fail=fake-chain-a:503,fake-chain-b:empty]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  const notices = lastAnswer(page).getByTestId("fallback-notice");
  await expect(notices).toHaveText([
    "已切换到 自定义 (OpenAI 兼容) · fake-chain-b（服务不可用，HTTP 503）",
    "已切换到 DeepSeek 深度求索 · fake-chain-c（空回答）",
  ]);
  await expect(lastAnswer(page).getByTestId("answer-text")).toContainText("回答完毕。");
  await shot(page, "fallback-notice", testInfo.project.outputDir);

  // After a reload the notices are still there (saved with the answer).
  await page.reload();
  await hydrated(page);
  await expect(lastAnswer(page).getByTestId("fallback-notice")).toHaveCount(2);
});

test("an answer cut mid-way is finished by the next model without a seam", async ({ page }, testInfo) => {
  await openChat(page);
  await pick(page, "custom", "fake-cont-a");
  await ask(page, "续写 [[fake:openai fail=fake-cont-a:drop17]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  await expect(lastAnswer(page).getByTestId("fallback-notice")).toHaveText(
    "回答中断（连接中断），已由 DeepSeek 深度求索 · fake-cont-prefix 接着写完",
  );
  const saved = await page.evaluate(() => JSON.parse(localStorage.getItem("streamai.chat.v1") ?? "{}"));
  expect(saved.messages.at(-1).content).toBe(ANSWER);
  await shot(page, "continued-answer", testInfo.project.outputDir);
});
