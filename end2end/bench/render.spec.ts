import { test, expect } from "@playwright/test";

// Rendering a 10,000-chunk answer: does the page keep up with the upstream's pace?
test("render a 10,000-chunk answer", async ({ page }) => {
  const chunks = 10_000;
  await page.goto("/");
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");
  await page.evaluate(() => localStorage.clear());
  await page.reload();
  await expect(page.locator("header.top")).toHaveAttribute("data-hydrated", "true");

  // Record, on the page's own clock, when text first shows and when the answer is done.
  await page.evaluate(() => {
    const w = window as any;
    w.__firstText = 0;
    w.__done = 0;
    w.__frames = 0;
    w.__longFrames = 0;
    let last = performance.now();
    const tick = (now: number) => {
      if (w.__firstText && !w.__done) {
        w.__frames++;
        if (now - last > 50) w.__longFrames++;
      }
      last = now;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    new MutationObserver(() => {
      const answer = document.querySelector("[data-testid=answer]:last-of-type");
      const text = answer?.querySelector("[data-testid=answer-text] .block")?.textContent ?? "";
      if (!w.__firstText && text.length > 0) w.__firstText = performance.now();
      if (!w.__done && answer?.getAttribute("data-status") === "done") w.__done = performance.now();
    }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  });

  const composer = page.getByTestId("composer");
  await composer.fill(`长回答 [[fake:openai chunks=${chunks} delay=1]]`);
  await composer.press("Enter");
  await expect(page.getByTestId("answer").last()).toHaveAttribute("data-status", "done", { timeout: 170_000 });
  await page.waitForTimeout(200);

  const figures = await page.evaluate(() => {
    const w = window as any;
    const saved = JSON.parse(localStorage.getItem("streamai.chat.v1") ?? "{}");
    const last = saved.messages.at(-1);
    return {
      screenMs: w.__done - w.__firstText,
      frames: w.__frames,
      longFrames: w.__longFrames,
      upstreamMs: last.stats.timing.total_ms - last.stats.timing.first_token_ms,
      text: last.content as string,
    };
  });
  const expected = Array.from({ length: chunks }, (_, i) => `第${i}段。`).join("");
  expect(figures.text).toBe(expected);
  const ratio = figures.screenMs / figures.upstreamMs;
  console.log(
    `10,000-chunk answer: upstream first→last ${figures.upstreamMs.toFixed(0)} ms, ` +
      `on screen first→last ${figures.screenMs.toFixed(0)} ms (ratio ${ratio.toFixed(3)}), ` +
      `${figures.frames} frames painted, ${figures.longFrames} over 50 ms`,
  );
});
