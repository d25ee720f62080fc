//! Markdown for answers, rendered safely and progressively.
//!
//! Safety: the model's text never becomes live HTML. Raw HTML in the markdown is turned
//! into plain text (so `<img onerror=…>` shows as text), links and images with script-ish
//! schemes lose their target, and images become plain links (no silent remote loads).
//!
//! Progress at O(chunk): the text is cut into *blocks* at blank lines outside code
//! fences. A finished block is rendered once and never again; only the unfinished tail is
//! re-rendered as chunks arrive. A 10,000-chunk answer therefore costs each chunk the
//! size of one paragraph, not of the whole answer.

use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag};

/// Renders a piece of markdown to safe HTML.
fn render(markdown: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        // Images become plain links: no silent remote loads.
        Event::Start(
            Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }
            | Tag::Image {
                link_type,
                dest_url,
                title,
                id,
            },
        ) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::End(pulldown_cmark::TagEnd::Image) => Event::End(pulldown_cmark::TagEnd::Link),
        other => other,
    });
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, events);
    align_by_class(&add_copy_buttons(&out))
}

/// Table alignment as classes: the page's CSP (`style-src 'self'`) forbids the inline
/// `style` pulldown-cmark writes on `<th>` and `<td>`. Only tags are touched: a `<` in
/// the answer's text is escaped, so `<th style=` can only be pulldown-cmark's own.
fn align_by_class(html: &str) -> String {
    if !html.contains(" style=\"text-align: ") {
        return html.to_owned();
    }
    let mut out = html.to_owned();
    for cell in ["th", "td"] {
        for side in ["left", "center", "right"] {
            out = out.replace(
                &format!("<{cell} style=\"text-align: {side}\">"),
                &format!("<{cell} class=\"align-{side}\">"),
            );
        }
    }
    out
}

/// Only http(s), mailto and relative targets survive.
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower = url.trim().to_ascii_lowercase();
    let scheme = lower.split_once(':').map(|(s, _)| s);
    match scheme {
        None | Some("http" | "https" | "mailto") => url,
        Some(s) if s.contains('/') || s.contains('#') || s.contains('?') => url,
        Some(_) => CowStr::Borrowed("#"),
    }
}

/// Wraps each code block with a copy button; the click is handled by delegation.
fn add_copy_buttons(html: &str) -> String {
    html.replace(
        "<pre>",
        "<div class=\"code-block\"><button type=\"button\" class=\"copy-code\" aria-label=\"复制代码\">复制</button><pre>",
    )
    .replace("</pre>", "</pre></div>")
}

/// An answer's markdown as it streams in.
#[derive(Debug, Default, Clone)]
pub(crate) struct MarkdownStream {
    text: String,
    /// Bytes of `text` already rendered into blocks.
    committed: usize,
    /// Where the next scan for a block boundary starts (a line start).
    scan_from: usize,
    in_fence: bool,
}

impl MarkdownStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends text; returns the HTML of any blocks it completed, in order.
    pub fn push(&mut self, chunk: &str) -> Vec<String> {
        self.text.push_str(chunk);
        let mut finished = Vec::new();
        // Walk complete lines only: a line's end must have arrived.
        while let Some(offset) = self.text[self.scan_from..].find('\n') {
            let line_end = self.scan_from + offset;
            let line = &self.text[self.scan_from..line_end];
            let trimmed = line.trim_start();
            if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
                self.in_fence = !self.in_fence;
            }
            let blank = line.trim().is_empty();
            self.scan_from = line_end + 1;
            if blank && !self.in_fence {
                let block = &self.text[self.committed..self.scan_from];
                if !block.trim().is_empty() {
                    finished.push(render(block));
                }
                self.committed = self.scan_from;
            }
        }
        finished
    }

    /// The HTML of the unfinished tail.
    pub fn tail_html(&self) -> String {
        let tail = &self.text[self.committed..];
        if tail.trim().is_empty() {
            String::new()
        } else {
            render(tail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_is_shown_as_text() {
        let html = render("hi <img src=x onerror=alert(1)> and <script>alert(2)</script>\n\n<div onclick=x>block</div>");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<div onclick"), "{html}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
    }

    #[test]
    fn dangerous_links_lose_their_target() {
        let html =
            render("[a](javascript:alert(1)) [b](https://example.com) [c](JavaScript:x) [d](/rel)");
        assert!(!html.to_lowercase().contains("javascript:"), "{html}");
        assert!(html.contains("href=\"https://example.com\""));
        assert!(html.contains("href=\"/rel\""));
        let image = render("![x](https://example.com/a.png)");
        assert!(!image.contains("<img"), "{image}");
    }

    #[test]
    fn table_alignment_needs_no_inline_style() {
        let html = render("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |\n");
        assert!(!html.contains("style="), "{html}");
        for side in ["left", "center", "right"] {
            assert!(html.contains(&format!("class=\"align-{side}\"")), "{html}");
        }
        // Text that merely looks like the attribute stays text.
        let text = render("<b style=\"text-align: left\">x</b>");
        assert!(
            text.contains("&lt;b style=\"text-align: left\"&gt;"),
            "{text}"
        );
    }

    #[test]
    fn code_blocks_get_a_copy_button() {
        let html = render("```rust\nfn main() {}\n```\n");
        assert!(html.contains("class=\"copy-code\""));
        assert!(html.contains("<code class=\"language-rust\">fn main() {}"));
    }

    /// Streaming in any pieces renders the same blocks + tail as rendering whole.
    #[test]
    fn blocks_commit_at_blank_lines_outside_fences() {
        let text = "# 标题\n\n第一段。\n\n```\ncode\n\nstill code\n```\n\n- a\n- b\n\n结尾";
        for size in [1, 2, 3, 7, text.len()] {
            let mut stream = MarkdownStream::new();
            let mut blocks = Vec::new();
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(size) {
                blocks.extend(stream.push(&piece.iter().collect::<String>()));
            }
            assert_eq!(blocks.len(), 4, "size {size}: {blocks:?}");
            assert!(blocks[2].contains("still code"), "the fence is one block");
            assert_eq!(stream.tail_html(), "<p>结尾</p>\n");
            assert_eq!(stream.text, text);
        }
    }
}
