import { test, expect, Page } from "@playwright/test";

// Rendering a 10,000-chunk answer: does the page keep up with the upstream's pace, and
// does it paint without jank? Two shapes, each the worst case for a block-wise renderer:
// one unbroken paragraph, and one fenced code block (the fake's `answer=code`).
const CHUNKS = 10_000;

/// The fake's texts, rebuilt here to check the saved answer byte for byte.
const paragraph = (n: number) => Array.from({ length: n }, (_, i) => `第${i}段。`).join("");
const code = (n: number) =>
  Array.from({ length: n }, (_, i) => {
    const open = i === 0 ? "```rust\n" : "";
    const end = i + 1 === n ? "\n```" : i % 4 === 3 ? "\n" : " ";
    return `${open}let v${i} = ${i};${end}`;
  }).join("");

const SHAPES = [
  { name: "paragraph", marker: `chunks=${CHUNKS} delay=1`, expected: paragraph(CHUNKS) },
  { name: "code block", marker: `chunks=${CHUNKS} delay=1 answer=code`, expected: code(CHUNKS) },
];

async function openChat(page: Page) {
  await page.goto("/");
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  await page.evaluate(() => localStorage.clear());
  await page.reload();
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
}

const percentile = (sorted: number[], p: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

for (const shape of SHAPES) {
  test(`render a 10,000-chunk answer: ${shape.name}`, async ({ page }) => {
    await openChat(page);

    // Record, on the page's own clock, when text first shows, when the answer is done and
    // shown as finished (its open block rendered as markdown: no `.open-line` left), and
    // every frame's duration in between, that last frame included. The observer does O(1)
    // work per mutation batch, so that the measuring does not itself cost a frame.
    await page.evaluate(() => {
      const w = window as any;
      w.__firstText = 0;
      w.__done = 0;
      w.__statusDone = 0;
      w.__frameMs = [];
      w.__frameAt = [];
      let last = performance.now();
      const tick = (now: number) => {
        if (w.__firstText && !w.__done) {
          w.__frameMs.push(now - last);
          w.__frameAt.push(now - w.__firstText);
          if (w.__statusDone && !document.querySelector("[data-testid=answer]:last-of-type .open-line"))
            w.__done = now;
        }
        last = now;
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
      new MutationObserver(() => {
        if (w.__firstText && w.__statusDone) return;
        const answer = document.querySelector("[data-testid=answer]:last-of-type");
        if (!answer) return;
        if (!w.__firstText && answer.querySelector("[data-testid=answer-text] .block")?.firstChild)
          w.__firstText = performance.now();
        if (!w.__statusDone && answer.getAttribute("data-status") === "done") w.__statusDone = performance.now();
      }).observe(document.body, { subtree: true, childList: true, attributes: true });
    });

    const composer = page.getByTestId("composer");
    await composer.fill(`长回答 [[fake:openai ${shape.marker}]]`);
    await composer.press("Enter");
    await expect(page.getByTestId("answer").last()).toHaveAttribute("data-status", "done", { timeout: 170_000 });
    await page.waitForTimeout(200);

    const figures = await page.evaluate(() => {
      const w = window as any;
      const saved = JSON.parse(localStorage.getItem("streamai.chat.v1") ?? "{}");
      const last = saved.messages.at(-1);
      const answer = document.querySelector("[data-testid=answer]:last-of-type [data-testid=answer-text]");
      return {
        screenMs: w.__done - w.__firstText,
        frameMs: w.__frameMs as number[],
        frameAt: w.__frameAt as number[],
        upstreamMs: last.stats.timing.total_ms - last.stats.timing.first_token_ms,
        text: last.content as string,
        code: answer?.querySelector("pre code")?.textContent ?? null,
        paragraphs: answer?.querySelectorAll("p").length ?? 0,
      };
    });
    expect(figures.text).toBe(shape.expected);
    // What the screen shows once done is the rendered markdown, not the raw text.
    if (shape.name === "code block") {
      expect(figures.code).toBe(shape.expected.slice("```rust\n".length, -"```".length));
    } else {
      expect(figures.code).toBeNull();
      expect(figures.paragraphs).toBe(1);
    }

    const sorted = [...figures.frameMs].sort((a, b) => a - b);
    // Where in the stream the long frames fell (% of the time on screen).
    const longAt = figures.frameMs
      .map((ms, i) => [ms, figures.frameAt[i]])
      .filter(([ms]) => ms > 50)
      .map(([ms, at]) => `${ms.toFixed(0)} ms at ${((100 * at) / figures.screenMs).toFixed(0)}%`);
    const over50 = sorted.filter((ms) => ms > 50).length;
    // Frames that took more than one refresh (60 Hz: frames come in 16.7 ms steps).
    const slow = sorted.filter((ms) => ms > 17.5).length;
    const ratio = figures.screenMs / figures.upstreamMs;
    console.log(
      `10,000-chunk ${shape.name}: upstream first→last ${figures.upstreamMs.toFixed(0)} ms, ` +
        `on screen first→last ${figures.screenMs.toFixed(0)} ms (ratio ${ratio.toFixed(3)}, ` +
        `lag ${(figures.screenMs - figures.upstreamMs).toFixed(0)} ms); ${sorted.length} frames, ` +
        `${over50} over 50 ms, ${((100 * slow) / sorted.length).toFixed(1)} % over one refresh, ` +
        `p50 ${percentile(sorted, 50).toFixed(1)} ms, ` +
        `p95 ${percentile(sorted, 95).toFixed(1)} ms, p99 ${percentile(sorted, 99).toFixed(1)} ms, ` +
        `max ${(sorted.at(-1) ?? 0).toFixed(1)} ms` +
        (longAt.length ? ` (long: ${longAt.join(", ")})` : ""),
    );
  });
}
