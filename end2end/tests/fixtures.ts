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
