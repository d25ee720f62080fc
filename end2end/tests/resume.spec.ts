import { test, expect, Page } from "@playwright/test";
import {
  ANSWER,
  answerLength,
  ask,
  breakableStreams,
  collectErrors,
  cutStreams,
  fakeRecords,
  hydrated,
  lastAnswer,
  numbered,
  openChat,
  savedMessages,
} from "./fixtures";

// Durable streams: an answer is generated on the server apart from any connection, so a
// reload, a broken connection or a second tab picks it up where it was — every character
// once, in order — and a stop from any tab stops it everywhere.

/// How many requests the fake upstream saw for the marker holding `option`: a resumed
/// answer is never asked again.
const upstreamCalls = async (page: Page, option: string) =>
  (await fakeRecords(page.request)).filter((r) => r.scenario.includes(option)).length;

const answerText = (page: Page) => lastAnswer(page).getByTestId("answer-text");

test("reloading mid-answer resumes the same answer to its end, byte-identical", async ({ page }) => {
  const errors = collectErrors(page);
  await openChat(page);
  await ask(page, "刷新续传 [[fake:openai delay=120]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "streaming");
  await expect.poll(() => answerLength(page)).toBeGreaterThan(8);
  await page.reload();
  await hydrated(page);
  await expect(page.getByTestId("answer")).toHaveCount(1);
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  const saved = (await savedMessages(page)).at(-1);
  expect(saved?.content).toBe(ANSWER);
  await expect(answerText(page)).toContainText("println!(\"你好，世界 🌏\");");
  await expect(answerText(page)).toContainText("表情：🚀✨👍🏽");
  await expect(answerText(page).locator("pre code")).toHaveCount(1);
  // Shown once: the greeting and the closing line each appear exactly once.
  const shown = (await answerText(page).textContent()) ?? "";
  expect(shown.split("你好！这是来自模拟上游的回答。").length).toBe(2);
  expect(shown.split("回答完毕。").length).toBe(2);
  await expect(lastAnswer(page).getByTestId("stats")).toContainText("¥");
  expect(await upstreamCalls(page, "delay=120")).toBe(1);
  expect(errors).toEqual([]);
});

test("a broken connection shows 重新连接中… and the answer completes exactly once", async ({ page, context }) => {
  const errors = collectErrors(page);
  await breakableStreams(page);
  await openChat(page);
  await ask(page, "断网续传 [[fake:openai chunks=50 delay=90]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "streaming");
  await expect.poll(() => answerLength(page)).toBeGreaterThan(20);
  // The network goes: the open body breaks (Chromium's offline mode fails only new
  // requests), and the resumes fail until it comes back.
  await context.setOffline(true);
  await cutStreams(page);
  await expect(lastAnswer(page).getByTestId("reconnecting")).toBeVisible();
  await expect(lastAnswer(page).getByTestId("reconnecting")).toHaveText("重新连接中…");
  await page.waitForTimeout(1_500);
  await context.setOffline(false);
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  await expect(lastAnswer(page).getByTestId("reconnecting")).toHaveCount(0);
  const expected = numbered(50);
  expect((await savedMessages(page)).at(-1)?.content).toBe(expected);
  expect(((await answerText(page).textContent()) ?? "").trim()).toBe(expected);
  // No gap: nothing was lost in between.
  await expect(lastAnswer(page).locator(".warning")).toHaveCount(0);
  expect(await upstreamCalls(page, "chunks=50 delay=90")).toBe(1);
  expect(errors).toEqual([]);
});

test("a second tab follows the live answer; stop there stops it in both", async ({ context }) => {
  const first = await context.newPage();
  const errors = collectErrors(first);
  await openChat(first);
  await ask(first, "两个标签 [[fake:openai chunks=80 delay=120]]");
  await expect(lastAnswer(first)).toHaveAttribute("data-status", "streaming");
  await expect.poll(() => answerLength(first)).toBeGreaterThan(10);

  // The same conversation (one origin, one localStorage) in a second tab.
  const second = await context.newPage();
  errors.push(...collectErrors(second));
  await second.goto("/");
  await hydrated(second);
  await expect(lastAnswer(second)).toHaveAttribute("data-status", "streaming");
  await expect.poll(() => answerLength(second)).toBeGreaterThan(10);
  const seen = await answerLength(second);
  await expect.poll(() => answerLength(second)).toBeGreaterThan(seen + 6);

  await second.getByRole("button", { name: "停止" }).click();
  for (const page of [second, first]) {
    await expect(lastAnswer(page)).toHaveAttribute("data-status", "stopped");
    await expect(lastAnswer(page).getByTestId("stopped")).toBeVisible();
    // The stopped answer is billed: its cost shows.
    await expect(lastAnswer(page).getByTestId("stats")).toContainText("¥");
    await expect(lastAnswer(page).getByTestId("stats")).toContainText("stopped");
  }
  const whole = numbered(80);
  const inFirst = ((await answerText(first).textContent()) ?? "").trim();
  const inSecond = ((await answerText(second).textContent()) ?? "").trim();
  expect(inSecond).toBe(inFirst);
  expect(whole.startsWith(inFirst)).toBe(true);
  expect(inFirst.length).toBeLessThan(whole.length);
  expect(await upstreamCalls(first, "chunks=80 delay=120")).toBe(1);
  // Nothing more arrives after the stop.
  await first.waitForTimeout(600);
  expect(((await answerText(first).textContent()) ?? "").trim()).toBe(inFirst);
  expect(errors).toEqual([]);
});

test("a tab left open shows another tab's turns, and its own saves keep them", async ({ context }) => {
  const first = await context.newPage();
  const errors = collectErrors(first);
  await openChat(first);
  const second = await context.newPage();
  errors.push(...collectErrors(second));
  await second.goto("/");
  await hydrated(second);
  await second.getByTestId("composer").fill("还没发出的问题");

  await ask(first, "第一个标签的问题 [[fake:openai]]");
  await expect(lastAnswer(first)).toHaveAttribute("data-status", "done");
  // The second tab shows the turn without a reload, and keeps what is being written.
  await expect(second.getByTestId("user-message")).toHaveText(/第一个标签的问题/);
  await expect(lastAnswer(second)).toHaveAttribute("data-status", "done");
  await expect(second.getByTestId("composer")).toHaveValue("还没发出的问题");

  // A setting moved there saves the conversation with the first tab's turn in it.
  await second.locator("details.params > summary").click();
  await second.getByLabel("temperature").fill("0.3");
  await expect
    .poll(() => second.evaluate(() => JSON.parse(localStorage.getItem("streamai.chat.v1") ?? "{}").settings?.temperature))
    .toBe(0.3);
  expect((await savedMessages(second)).map((m) => m.role)).toEqual(["user", "assistant"]);
  await first.reload();
  await hydrated(first);
  await expect(first.getByTestId("user-message")).toHaveText(/第一个标签的问题/);
  await expect(lastAnswer(first)).toHaveAttribute("data-status", "done");
  expect(errors).toEqual([]);
});

test("leaving the tab mid-answer and coming back follows it to its end", async ({ page }) => {
  const errors = collectErrors(page);
  await openChat(page);
  await ask(page, "离开再回来 [[fake:openai chunks=40 delay=100]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "streaming");
  await expect.poll(() => answerLength(page)).toBeGreaterThan(10);
  await page.getByRole("link", { name: "服务配置" }).click();
  await expect(page.getByRole("heading", { name: "可用平台与价格" })).toBeVisible();
  // Saved as still streaming, with where it was: the server goes on meanwhile.
  const saved = (await savedMessages(page)).at(-1) as any;
  expect(saved?.status).toBe("Streaming");
  expect(saved?.progress?.stream_id).toBeTruthy();
  await page.waitForTimeout(500);

  await page.getByRole("link", { name: "流式AI", exact: true }).click();
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  const expected = numbered(40);
  expect((await savedMessages(page)).at(-1)?.content).toBe(expected);
  expect(((await answerText(page).textContent()) ?? "").trim()).toBe(expected);
  expect(await upstreamCalls(page, "chunks=40 delay=100")).toBe(1);
  expect(errors).toEqual([]);
});

test("an answer whose stream has expired ends as failed and keeps its text", async ({ page }) => {
  const errors = collectErrors(page);
  await openChat(page);
  await page.evaluate(() => {
    const answer = {
      role: "assistant",
      content: "半截回答",
      status: "Streaming",
      progress: { stream_id: "chat-long-gone", last_event: 3, seq: 2 },
    };
    const question = { role: "user", content: "问", status: "Done" };
    localStorage.setItem("streamai.chat.v1", JSON.stringify({ messages: [question, answer], settings: null }));
  });
  await page.reload();
  await hydrated(page);
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "failed");
  await expect(lastAnswer(page).getByTestId("failure")).toContainText("回答已过期，无法继续");
  await expect(answerText(page)).toContainText("半截回答");
  expect((await savedMessages(page)).at(-1)?.content).toBe("半截回答");
  expect(errors).toEqual([]);
});
