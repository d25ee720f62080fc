import { test, expect, APIRequestContext, Page } from "@playwright/test";
import {
  ANSWER,
  REASONING,
  answerLength,
  ask,
  collectErrors,
  fakeRecords,
  fitsAndShot,
  lastAnswer,
  numbered,
  openChat,
  savedMessages,
} from "./fixtures";

/// The page ends up scrolled to the end (within the follow's margin).
const expectFollowedToTheEnd = (page: Page) =>
  expect
    .poll(() => page.evaluate(() => window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 130))
    .toBe(true);

/// Once the answer is done and any follow wait has passed, the page is still about at
/// `y` (the browser's scroll anchoring may keep a line in place), far from the end.
const expectLeftAt = async (page: Page, y: number) => {
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  await page.waitForTimeout(600); // longer than any follow wait
  const after = await page.evaluate(() => ({
    y: window.scrollY,
    below: document.documentElement.scrollHeight - (window.scrollY + window.innerHeight),
  }));
  expect(Math.abs(after.y - y)).toBeLessThan(40);
  expect(after.below).toBeGreaterThan(250);
};

/// How the fake's latest request whose marker has `option` ended (`client_gone`, …).
const outcomeOf = async (request: APIRequestContext, option: string) =>
  (await fakeRecords(request)).filter((r) => r.scenario.includes(option)).at(-1)?.outcome;

test("text streams in visibly and ends byte-exact", async ({ page }) => {
  await openChat(page);
  // Sample the answer's length on every animation frame while it streams.
  await page.evaluate(() => {
    (window as any).__lengths = [];
    const sample = () => {
      const el = document.querySelectorAll("[data-testid=answer-text]");
      const last = el[el.length - 1];
      if (last) (window as any).__lengths.push(last.textContent?.length ?? 0);
      requestAnimationFrame(sample);
    };
    requestAnimationFrame(sample);
  });
  await ask(page, "流式测试一 [[fake:deepseek delay=40]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  const lengths: number[] = await page.evaluate(() => (window as any).__lengths);
  const distinct = new Set(lengths.filter((n) => n > 0));
  expect(distinct.size).toBeGreaterThanOrEqual(3);

  const text = lastAnswer(page).getByTestId("answer-text");
  await expect(text).toContainText("println!(\"你好，世界 🌏\");");
  await expect(text).toContainText("表情：🚀✨👍🏽");
  await expect(text.locator("pre code")).toHaveCount(1);
  const saved = await savedMessages(page);
  expect(saved.at(-1)?.content).toBe(ANSWER);
  await expect(lastAnswer(page).getByTestId("stats")).toContainText("服务商统计");
  await expect(lastAnswer(page).getByTestId("stats")).toContainText("¥");
});

test("reads split inside characters and lines lose nothing", async ({ page }) => {
  await openChat(page);
  await ask(page, "拆分测试 [[fake:openai split crlf]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  expect((await savedMessages(page)).at(-1)?.content).toBe(ANSWER);
});

test("reasoning shows in a folded 思考过程 block", async ({ page }) => {
  await openChat(page);
  await ask(page, "推理测试 [[fake:reasoner]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  const details = lastAnswer(page).locator("details.reasoning");
  await expect(details).toBeVisible();
  await expect(details).not.toHaveAttribute("open", "");
  await details.locator("summary").click();
  await expect(details).toContainText(REASONING);
  expect((await savedMessages(page)).at(-1)?.content).toBe(ANSWER);
});

test("stop keeps the partial text and the upstream sees the disconnect", async ({ page, request }) => {
  await openChat(page);
  await ask(page, "停止测试 [[fake:openai delay=150]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "streaming");
  await expect.poll(() => answerLength(page)).toBeGreaterThan(4);
  await page.getByRole("button", { name: "停止" }).click();
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "stopped");
  await expect(lastAnswer(page).getByTestId("stopped")).toBeVisible();
  const partial = (await savedMessages(page)).at(-1)?.content ?? "";
  expect(partial.length).toBeGreaterThan(0);
  expect(ANSWER.startsWith(partial)).toBe(true);
  expect(partial.length).toBeLessThan(ANSWER.length);
  await expect.poll(() => outcomeOf(request, "delay=150")).toBe("client_gone");
});

test("a 429 with Retry-After shows a live countdown, then the answer", async ({ page }) => {
  await openChat(page);
  await ask(page, "限流测试 [[fake:openai status=429 times=1 retry_after=3]]");
  const retry = lastAnswer(page).getByTestId("retry");
  await expect(retry).toContainText("限流，3 秒后重试（第 1/3 次）");
  await expect(retry).toContainText("限流，1 秒后重试（第 1/3 次）", { timeout: 5_000 });
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 15_000 });
  await expect(retry).toHaveCount(0);
  expect((await savedMessages(page)).at(-1)?.content).toBe(ANSWER);
});

test("a failure mid-stream keeps the text and offers a retry", async ({ page }) => {
  await openChat(page);
  await ask(page, "断线测试 [[fake:openai drop_after=6]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "failed", { timeout: 15_000 });
  const failure = lastAnswer(page).getByTestId("failure");
  await expect(failure).toContainText("中途断开");
  const partial = (await savedMessages(page)).at(-1)?.content ?? "";
  expect(partial.length).toBeGreaterThan(0);
  expect(ANSWER.startsWith(partial)).toBe(true);
  await expect(lastAnswer(page).getByTestId("answer-text")).toContainText(partial.slice(0, 4));
  await expect(failure.getByRole("button", { name: "重试" })).toBeVisible();
});

test("an answer carrying HTML runs no script", async ({ page }) => {
  await openChat(page);
  await ask(page, "安全测试 [[fake:openai answer=xss]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  const text = lastAnswer(page).getByTestId("answer-text");
  await expect(text).toContainText("<img src=x onerror=");
  await expect(text).toContainText("<script>");
  await expect(text.locator("img, script")).toHaveCount(0);
  await text.getByRole("link", { name: "点我" }).click();
  expect(await page.evaluate(() => (window as any).__xss)).toBeUndefined();
});

test("Enter during IME composition does not send; Shift+Enter is a newline", async ({ page }) => {
  await openChat(page);
  const composer = page.getByTestId("composer");
  await composer.fill("输入法");
  await composer.dispatchEvent("keydown", { key: "Enter", isComposing: true });
  await composer.dispatchEvent("keydown", { key: "Enter", keyCode: 229 });
  await expect(page.getByTestId("user-message")).toHaveCount(0);
  await composer.press("Shift+Enter");
  await composer.pressSequentially("第二行");
  await expect(composer).toHaveValue("输入法\n第二行");
  await expect(page.getByTestId("user-message")).toHaveCount(0);
  await composer.press("Enter");
  await expect(page.getByTestId("user-message")).toHaveCount(1);
  await expect(page.getByTestId("user-message")).toContainText("第二行");
});

// Issue 13: the markdown renderer is a WASM chunk of its own (src/chat/markdown/on_demand.rs):
// a page with no answer never fetches it; the first answer (or a restored one) does.
test("the markdown renderer is fetched for the first answer, not with the page", async ({ page }) => {
  const errors = collectErrors(page);
  await openChat(page);
  const wasm: string[] = [];
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (url.pathname.endsWith(".wasm")) wasm.push(url.pathname);
  });
  await page.reload();
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  expect(wasm).toEqual(["/pkg/streamai.wasm"]);

  await ask(page, "按需加载 [[fake:deepseek]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  const text = lastAnswer(page).getByTestId("answer-text");
  await expect(text.locator("pre code")).toHaveCount(1);
  await expect(text.locator("li")).toHaveCount(2);
  expect(wasm.filter((path) => path.includes("split_markdown"))).toHaveLength(1);

  // A reload restores the answer: the renderer comes again (from the cache) and the
  // answer is markdown, as before.
  await page.reload();
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  await expect(text.locator("pre code")).toHaveCount(1);
  await expect(text).toContainText("回答完毕。");
  expect(errors).toEqual([]);
});

test("without the renderer's chunk an answer is still shown whole, as text", async ({ page }) => {
  await page.route(/split_markdown\.wasm$/, (route) => route.abort());
  const errors = collectErrors(page);
  await openChat(page);
  await ask(page, "渲染器缺失 [[fake:deepseek]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  const text = lastAnswer(page).getByTestId("answer-text");
  await expect(text.locator("pre code")).toHaveCount(0);
  // Every character is there, as text: the markdown's own marks included.
  await expect(text).toContainText("```rust");
  await expect(text).toContainText("println!(\"你好，世界 🌏\");");
  await expect(text).toContainText("回答完毕。");
  const saved = await savedMessages(page);
  expect(saved.at(-1)?.content).toBe(ANSWER);
  // Only the failed fetch itself is reported (by the split loader); nothing panicked.
  expect(errors.filter((e) => e !== "Failed to fetch")).toEqual([]);
});

// A network blip while the renderer's chunk is fetched costs the answer its markdown, not
// the rest of the page's life: the fetch is tried again, and later answers are markdown.
test("a failed fetch of the renderer is tried again; later answers are markdown", async ({ page }) => {
  // The first fetch fails; the next waits until the first answer has been looked at.
  let fetches = 0;
  let release = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  await page.route(/split_markdown\.wasm$/, async (route) => {
    if (++fetches === 1) return route.abort();
    await released;
    return route.continue();
  });
  const errors = collectErrors(page);
  await openChat(page);
  await ask(page, "第一次渲染 [[fake:deepseek]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  const first = lastAnswer(page).getByTestId("answer-text");
  await expect(first).toContainText("```rust");
  await expect(first.locator("pre code")).toHaveCount(0);
  // Tried again a second after the failure.
  await expect.poll(() => fetches, { timeout: 5_000 }).toBe(2);
  const loaded = page.waitForEvent("requestfinished", (r) => /split_markdown\.wasm$/.test(r.url()));
  release();
  await loaded;

  // Its chunks come a little apart: all of them after the renderer is in place.
  await ask(page, "第二次渲染 [[fake:deepseek delay=50]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  const second = lastAnswer(page).getByTestId("answer-text");
  await expect(second.locator("pre code")).toHaveCount(1);
  await expect(second).not.toContainText("```");
  const saved = await savedMessages(page);
  expect(saved.at(-1)?.content).toBe(ANSWER);
  expect(errors.filter((e) => e !== "Failed to fetch")).toEqual([]);
});

// A fetch that hangs holds the answer back a few seconds, not until the browser gives up.
test("a renderer fetch that hangs does not hold the answer back", async ({ page }) => {
  await page.route(/split_markdown\.wasm$/, () => {
    // Never answered.
  });
  const errors = collectErrors(page);
  await openChat(page);
  await ask(page, "渲染器卡住 [[fake:deepseek]]");
  const text = lastAnswer(page).getByTestId("answer-text");
  await expect(text).toContainText("回答完毕。", { timeout: 10_000 });
  await expect(text).toContainText("```rust");
  expect(errors).toEqual([]);
});

// The renderer comes while a long code block streams as text: the block is shown afresh as
// code, and it ends as code (not in the text frame it began in); as text it kept its lines.
test("a code block that streams as text becomes code when the renderer comes", async ({ page }) => {
  let release = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  await page.route(/split_markdown\.wasm$/, async (route) => {
    await released;
    return route.continue();
  });
  const errors = collectErrors(page);
  await openChat(page);
  await ask(page, "长代码 [[fake:openai chunks=1500 delay=5 answer=code]]");
  const text = lastAnswer(page).getByTestId("answer-text");
  // Past the view's 4 s wait the code streams as text, line by line.
  await expect(text).toContainText("let v3 = 3;", { timeout: 8_000 });
  expect(await text.evaluate((el) => (el as HTMLElement).innerText)).toContain("let v3 = 3;\nlet v4 = 4;");
  await expect(text.locator("pre code")).toHaveCount(0);
  release();
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 20_000 });
  const code = text.locator("pre code");
  await expect(code).toHaveCount(1);
  const shown = await code.evaluate((el) => (el as HTMLElement).innerText);
  expect(shown).toContain("let v3 = 3;\nlet v4 = 4;");
  expect(shown).toContain("let v1499 = 1499;");
  await expect(text).not.toContainText("```");
  expect(errors).toEqual([]);
});

test("reload keeps the conversation; 新对话 starts afresh", async ({ page }) => {
  await openChat(page);
  await ask(page, "刷新测试 [[fake:dashscope]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  await page.reload();
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByTestId("user-message")).toContainText("刷新测试");
  await expect(lastAnswer(page).getByTestId("answer-text")).toContainText("回答完毕。");
  await expect(page.getByTestId("totals")).not.toContainText("输入 0 ·");
  await page.getByRole("button", { name: "新对话" }).click();
  await expect(page.getByTestId("answer")).toHaveCount(0);
  await page.reload();
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByTestId("answer")).toHaveCount(0);
});

test("multi-turn context, regenerate, and edit-and-resend", async ({ page, request }) => {
  await openChat(page);
  await ask(page, "第一问 [[fake:openai]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  await ask(page, "第二问 [[fake:ark]]");
  await expect(page.getByTestId("answer")).toHaveCount(2);
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  const before = (await fakeRecords(request)).length;
  await lastAnswer(page).getByRole("button", { name: "重新生成" }).click();
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  await expect(page.getByTestId("answer")).toHaveCount(2);
  expect((await fakeRecords(request)).length).toBe(before + 1);

  await page.getByTestId("user-message").first().getByRole("button", { name: "编辑" }).click();
  await page.getByLabel("编辑消息").fill("改过的问题 [[fake:hunyuan]]");
  await page.getByRole("button", { name: "保存并重新发送" }).click();
  await expect(page.getByTestId("user-message")).toHaveCount(1);
  await expect(page.getByTestId("user-message")).toContainText("改过的问题");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  expect((await savedMessages(page)).map((m) => m.role)).toEqual(["user", "assistant"]);
});

test("a finger dragging the page down mid-answer stops the following at once", async ({ page }) => {
  await page.setViewportSize({ width: 375, height: 600 });
  await openChat(page);
  await ask(page, "触摸 [[fake:openai chunks=400 delay=5]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "streaming");
  await expect.poll(() => answerLength(page)).toBeGreaterThan(200);
  // A touch moving down the screen, as a reader pulling the page up; its scroll has
  // not landed yet (a follow scroll would cancel it).
  const at = await page.evaluate(() => {
    const touch = (type: string, y: number) =>
      new TouchEvent(type, {
        touches: [new Touch({ identifier: 1, target: document.body, clientX: 180, clientY: y })],
      });
    window.dispatchEvent(touch("touchstart", 200));
    window.dispatchEvent(touch("touchmove", 230));
    return window.scrollY;
  });
  await expectLeftAt(page, at);
});

test("停止 before the server answers ends the answer in seconds; the next question goes through", async ({ page }) => {
  await openChat(page);
  // This question's request is never answered (an overloaded server, a stalled network).
  await page.route("**/api/chat/stream", () => {});
  await ask(page, "没有回应 [[fake:openai]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "waiting");
  await page.getByRole("button", { name: "停止" }).click();
  await expect(page.getByRole("button", { name: "正在停止…" })).toBeDisabled();
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "stopped", { timeout: 6_000 });
  await expect(page.getByRole("button", { name: "发送" })).toBeVisible();
  await page.unroute("**/api/chat/stream");
  await ask(page, "下一个 [[fake:openai]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  await expect(page.getByTestId("answer")).toHaveCount(2);
});

test("a later long answer is followed to its end; an upward wheel stops that at once", async ({ page }) => {
  await page.setViewportSize({ width: 375, height: 600 });
  await openChat(page);
  // A first answer, so the markdown renderer has come (its arrival re-renders the text).
  await ask(page, "预热 [[fake:deepseek]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
  // On this narrow page one patch of a fast stream can add more than the follow's margin
  // below the view: the page is followed still, to the end.
  await ask(page, "跟随测试三 [[fake:openai chunks=400 delay=5]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  await expectFollowedToTheEnd(page);

  await ask(page, "跟随测试四 [[fake:openai chunks=400 delay=5]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "streaming");
  await expect.poll(() => answerLength(page)).toBeGreaterThan(200);
  // A wheel event that scrolls nothing: as a reader's wheel whose scroll has not landed
  // yet (smooth scrolling, a busy machine), when a follow scroll would cancel it.
  const at = await page.evaluate(() => {
    window.dispatchEvent(new WheelEvent("wheel", { deltaY: -120 }));
    return window.scrollY;
  });
  await expectLeftAt(page, at);
});

test("a long answer is followed down the page; a reader who scrolls up is left there", async ({ page }) => {
  await page.setViewportSize({ width: 375, height: 600 });
  await openChat(page);
  // Where the page is scrolled, at every frame while the answer streams.
  await page.evaluate(() => {
    const w = window as any;
    w.__scrolled = [];
    const sample = () => {
      const answer = document.querySelector("[data-testid=answer]:last-of-type");
      if (answer?.getAttribute("data-status") === "streaming") w.__scrolled.push(window.scrollY);
      requestAnimationFrame(sample);
    };
    requestAnimationFrame(sample);
  });
  await ask(page, "跟随测试 [[fake:openai chunks=400 delay=5]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  await expectFollowedToTheEnd(page);
  // Followed while it streamed, in steps (each scroll waits longer while scrolled frames
  // are slow, as in this headless browser), not only at the end.
  const scrolled: number[] = await page.evaluate(() => (window as any).__scrolled);
  expect(new Set(scrolled.filter((y) => y > 0)).size).toBeGreaterThanOrEqual(3);

  // Scrolled up mid-answer: the page stays where the reader put it.
  await ask(page, "跟随测试二 [[fake:openai chunks=400 delay=5]]");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "streaming");
  await expect.poll(() => answerLength(page)).toBeGreaterThan(200);
  // With the mouse wheel, as a reader does (only the reader's own input counts as
  // scrolling away: the page also moves when content above it shrinks).
  // How far above the end the page is when the wheel arrives, and a frame later (the
  // follow goes on until then, so a position read before the wheel says nothing).
  await page.evaluate(() => {
    const w = window as any;
    w.__aboveEnd = [];
    const aboveEnd = () => document.documentElement.scrollHeight - window.innerHeight - window.scrollY;
    window.addEventListener(
      "wheel",
      () => {
        w.__aboveEnd.push(aboveEnd());
        requestAnimationFrame(() => w.__aboveEnd.push(aboveEnd()));
      },
      { once: true },
    );
  });
  await page.mouse.move(187, 300);
  await page.mouse.wheel(0, -300);
  // The wheel took the page up from the end (a follow scroll did not undo it).
  await expect.poll(() => page.evaluate(() => Math.max(0, ...(window as any).__aboveEnd))).toBeGreaterThan(200);
  await page.waitForTimeout(300); // the wheel's scroll settles
  const reading = await page.evaluate(() => window.scrollY);
  await expectLeftAt(page, reading);
});

// Issue 13: a long plain paragraph (or code block) ends in the pieces it streamed in, so
// the end of the answer lays out nothing afresh; a reload shows the same pieces.
test("a long plain answer ends in place, in the pieces it streamed in", async ({ page }) => {
  await openChat(page);
  await ask(page, "长段落 [[fake:openai chunks=2000 delay=1]]");
  const text = lastAnswer(page).getByTestId("answer-text");
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "streaming");
  // While it streams: mark the first piece on the page.
  await expect.poll(() => text.locator(".piece").count(), { timeout: 20_000 }).toBeGreaterThan(2);
  await text.locator(".piece").first().evaluate((el) => ((el as any).__streamed = true));
  await expect(lastAnswer(page)).toHaveAttribute("data-status", "done", { timeout: 30_000 });
  await expect(text.locator(".open-line")).toHaveCount(0);
  // The same element, not a re-render: only the open line went.
  expect(await text.locator(".piece").first().evaluate((el) => (el as any).__streamed === true)).toBe(true);
  await expect(text.locator("p")).toHaveCount(1);
  expect(await text.locator("p").textContent()).toBe(numbered(2000));
  const pieces = await text.locator(".piece").allTextContents();

  await page.reload();
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  await expect(text.locator("p.pieces")).toHaveCount(1);
  expect(await text.locator(".piece").allTextContents()).toEqual(pieces);
});

for (const width of [375, 1280]) {
  test(`chat screenshot at ${width}px`, async ({ page }, testInfo) => {
    await page.setViewportSize({ width, height: width < 500 ? 812 : 900 });
    await openChat(page);
    await ask(page, "截图 [[fake:reasoner]]");
    await expect(lastAnswer(page)).toHaveAttribute("data-status", "done");
    await fitsAndShot(page, testInfo, `chat-${width}`);
  });
}
