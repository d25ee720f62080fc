import { expect, Page, TestInfo } from "@playwright/test";
import path from "node:path";

// What the fake upstream answers (src/fake_upstream/scenario.rs, ANSWER and REASONING).
export const ANSWER =
  "你好！这是来自模拟上游的回答。😀\n\n" +
  "下面是一段代码：\n\n```rust\nfn main() {\n    println!(\"你好，世界 🌏\");\n}\n```\n\n" +
  "- 中文与 English 混排\n- 表情：🚀✨👍🏽\n\n回答完毕。";
export const REASONING = "用户在打招呼。我应该礼貌地回应，并给出一个代码示例。";

export const FAKE = `http://127.0.0.1:${process.env.E2E_FAKE_PORT ?? 3199}`;

/// The requests the fake upstream has seen, oldest first.
export async function fakeRecords(request: import("@playwright/test").APIRequestContext) {
  const response = await request.get(`${FAKE}/__fake/requests`);
  return (await response.json()) as { scenario: string; key: string; status: number; outcome: string }[];
}

/// The conversation as the page saved it: the text exactly as the client assembled it.
export async function savedMessages(page: import("@playwright/test").Page) {
  return page.evaluate(() => {
    const saved = JSON.parse(localStorage.getItem("streamai.chat.v1") ?? "{}");
    return (saved.messages ?? []) as { role: string; content: string; reasoning: string; status: string }[];
  });
}

/// What `[[fake:… chunks=N]]` streams: `第0段。第1段。…`.
export const numbered = (chunks: number) => Array.from({ length: chunks }, (_, i) => `第${i}段。`).join("");

/// Waits until the page has hydrated (the WASM has taken it over).
export async function hydrated(page: Page) {
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
}

/// Opens the chat on an empty conversation.
export async function openChat(page: Page) {
  await page.goto("/");
  await hydrated(page);
  await page.evaluate(() => localStorage.clear());
  await page.reload();
  await hydrated(page);
}

/// Types `prompt` into the composer and sends it.
export async function ask(page: Page, prompt: string) {
  const composer = page.getByTestId("composer");
  await composer.fill(prompt);
  await composer.press("Enter");
}

export const lastAnswer = (page: Page) => page.getByTestId("answer").last();

/// The length of the last answer's text as shown.
export const answerLength = async (page: Page) =>
  (await lastAnswer(page).getByTestId("answer-text").textContent())?.length ?? 0;

/// Errors the page reports: uncaught ones, and console errors such as a WASM panic's.
export function collectErrors(page: Page) {
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(err.message));
  page.on("console", (msg) => {
    if (/disposed|unreachable|panicked/.test(msg.text())) errors.push(msg.text());
  });
  return errors;
}

/// Makes the page's chat streams breakable by [`cutStreams`]: `fetch` hands back each
/// `/api/chat/stream` body through a stream the test can fail, as a lost network would.
export async function breakableStreams(page: Page) {
  await page.addInitScript(() => {
    const cuts: (() => void)[] = [];
    const fetch = window.fetch.bind(window);
    window.fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
      const response = await fetch(input, init);
      const url = input instanceof Request ? input.url : String(input);
      if (!url.includes("/api/chat/stream") || !response.body) return response;
      const reader = response.body.getReader();
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          cuts.push(() => {
            controller.error(new TypeError("network error (cut by the test)"));
            reader.cancel().catch(() => {});
          });
        },
        async pull(controller) {
          try {
            const { done, value } = await reader.read();
            if (done) controller.close();
            else controller.enqueue(value);
          } catch (err) {
            controller.error(err);
          }
        },
      });
      const { status, statusText, headers } = response;
      return new Response(body, { status, statusText, headers });
    };
    (window as any).__cutStreams = () => cuts.splice(0).forEach((cut) => cut());
  });
}

/// Breaks every chat stream the page is reading (see [`breakableStreams`]).
export async function cutStreams(page: Page) {
  await page.evaluate(() => (window as any).__cutStreams());
}

/// Nothing overflows sideways (on a phone's width too: wide tables scroll inside their
/// card), and the whole page is saved as `screenshots/<name>.png` in the project's output.
export async function fitsAndShot(page: Page, testInfo: TestInfo, name: string) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow).toBeLessThanOrEqual(0);
  const file = path.join(testInfo.project.outputDir, "screenshots", `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

/// [`fitsAndShot`] at 1280 and 375 px wide (`<name>-<width>.png`), each from the top of
/// the page (the sticky header would otherwise sit mid-page in a full-page shot); the
/// page is left 1280 px wide.
export async function screenshots(page: Page, testInfo: TestInfo, name: string) {
  for (const width of [1280, 375]) {
    await page.setViewportSize({ width, height: width < 500 ? 800 : 900 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await fitsAndShot(page, testInfo, `${name}-${width}`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}
