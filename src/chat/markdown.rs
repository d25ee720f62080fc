//! Markdown for answers, rendered safely and progressively.
//!
//! Safety: the model's text never becomes live HTML. Raw HTML in the markdown is turned
//! into plain text (so `<img onerror=…>` shows as text), links and images with script-ish
//! schemes lose their target, and images become plain links (no silent remote loads).
//! While a block is open its new text reaches the page only as text nodes.
//!
//! Progress at O(chunk): the text is cut into *blocks* at blank lines outside code
//! fences, and around a code fence that starts a line (column 0): before its opening
//! line and after its closing one, as CommonMark itself ends a paragraph or a list
//! there. A finished block is rendered once and never again.
//!
//! The open block (the *tail*) is shown in one of three ways, chosen by [`Mode`]:
//! - an open column-0 code fence is shown as the code block it will become, and only
//!   grows: complete lines are appended as text, the line still arriving is replaced
//!   (it may turn out to be the closing fence);
//! - any other open block is re-rendered as markdown while it is short
//!   ([`OPEN_RENDER_LIMIT`]): a heading, a list or a table takes shape as it arrives;
//! - past that size it is shown as plain text (`white-space: pre-wrap`), appended as it
//!   arrives, and rendered as markdown once, when it ends. An unbroken 10,000-chunk
//!   paragraph thus costs each frame its new text, not the paragraph.
//!
//! A growing tail is cut into pieces ([`PIECE_BYTES`]: a code block after a line, plain
//! text after a line or a sentence and the spaces after it), each a block on the page, so
//! that a frame lays out only the open piece: one text run of 200 KB re-laid out per frame
//! was the jank. In a code block the cuts cannot be seen; in plain text a piece's last
//! line may end short.
//!
//! A long block whose markdown is only its text — a fenced code block, or a paragraph
//! with no markup, no line break and no run of spaces — stays in those pieces once
//! finished ([`render_block`]): finishing the answer then only removes the open line
//! ([`TailPatch::Settle`]) instead of laying out 200 KB afresh in one frame, and a reload
//! shows the same pieces. Any other block is rendered whole when it ends.
//!
//! The view asks for [`TailPatch`]es: the whole tail's HTML when the mode or the block
//! changed, otherwise only the text that arrived since. [`MarkdownStream::tail_html`] is
//! the HTML those patches build, so a reload shows what the stream showed. When the
//! answer ends ([`MarkdownStream::finish`]) the tail is rendered as markdown, exactly as
//! it would be from the saved text.
//!
//! Markdown becomes HTML only when the view asks (finished blocks, the tail's patches),
//! never as text arrives: in the browser the renderer is a WASM chunk of its own
//! ([`on_demand`]), fetched when the first answer is shown, and the view waits for it (a
//! few seconds at most: then text, until it comes).

use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag};

#[cfg(feature = "hydrate")]
pub(crate) mod on_demand;

/// The largest open block (bytes) that is re-rendered as markdown on each frame. Most
/// paragraphs, lists and tables stay below it; beyond it a re-render of the block would
/// cost a frame more than its new text does.
const OPEN_RENDER_LIMIT: usize = 8 * 1024;

/// Where the next text of an open block goes: the view inserts text before this element
/// ([`OPEN_LINE_SELECTOR`]) and shows an open fence's unfinished line in it.
const OPEN_LINE: &str = "<span class=\"open-line\">";
// Only the browser's view looks for it.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub(crate) const OPEN_LINE_SELECTOR: &str = "span.open-line";
/// A piece of a long block: a block of its own (`style/main.css`), so that the page lays
/// out only the open piece when text arrives, not the whole block.
pub(crate) const PIECE: &str = "<span class=\"piece\">";
/// A long paragraph shown in pieces (`white-space: pre-wrap` while it may hold anything).
const PIECES: &str = "<p class=\"pieces\">";
/// A growing tail is cut into pieces of about this many bytes: a code block after a line,
/// plain text after a line or a sentence.
const PIECE_BYTES: usize = 2 * 1024;

/// Renders a piece of markdown to safe HTML: in the browser with the renderer's chunk,
/// which the view has waited for ([`on_demand::ready`]).
fn render(markdown: &str) -> String {
    #[cfg(feature = "hydrate")]
    return on_demand::render(markdown);
    #[cfg(not(feature = "hydrate"))]
    render_now(markdown)
}

/// Whether markdown can be rendered now (in the browser: once the renderer's chunk came).
pub(crate) fn renderer_ready() -> bool {
    #[cfg(feature = "hydrate")]
    return on_demand::ready();
    #[cfg(not(feature = "hydrate"))]
    true
}

/// Whether markdown is rendered as markdown now (in the browser: the chunk has come; until
/// then [`render`] gives text).
fn renders_markdown() -> bool {
    #[cfg(feature = "hydrate")]
    return on_demand::loaded();
    #[cfg(not(feature = "hydrate"))]
    true
}

/// Waits until markdown can be rendered (in the browser: fetches the renderer's chunk).
pub(crate) async fn load_renderer() {
    #[cfg(feature = "hydrate")]
    on_demand::load().await;
}

/// Starts fetching the renderer before an answer needs it (a question is being written).
pub(crate) fn prefetch_renderer() {
    #[cfg(feature = "hydrate")]
    on_demand::prefetch();
}

/// Renders a piece of markdown to safe HTML, with the renderer at hand.
fn render_now(markdown: &str) -> String {
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

/// Appends `text` as HTML text: `&`, `<` and `>` escaped, as pulldown-cmark escapes text
/// (and as a text node holds it).
fn escape_into(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<', '>']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            _ => "&gt;",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// A code fence that is open.
#[derive(Debug, Clone, PartialEq)]
struct Fence {
    /// `` ` `` or `~`, and how many of them opened it.
    marker: u8,
    len: usize,
    /// It starts its line (column 0): its block is the fence, shown as it grows.
    column0: Option<OpenCode>,
}

/// An open column-0 fence's code block: where its opening line and its code start in
/// the text.
#[derive(Debug, Clone, PartialEq)]
struct OpenCode {
    line: usize,
    body: usize,
}

/// The fence `line` opens: its marker, its length, and its indentation in spaces.
fn fence_opening(line: &str) -> Option<(u8, usize, usize)> {
    let rest = line.trim_start();
    let marker = *rest.as_bytes().first()?;
    if marker != b'`' && marker != b'~' {
        return None;
    }
    let len = rest.bytes().take_while(|&b| b == marker).count();
    // A backtick fence's info string has no backtick (else it is inline code).
    if len < 3 || (marker == b'`' && rest[len..].contains('`')) {
        return None;
    }
    Some((marker, len, line.len() - rest.len()))
}

impl Fence {
    /// Whether `line` closes this fence: at least as many markers, then only spaces. A
    /// column-0 fence is closed as CommonMark closes it (indented at most 3 spaces); a
    /// fence inside a list or a quote by any indentation.
    fn closed_by(&self, line: &str) -> bool {
        let rest = line.trim_start();
        let indent = line.len() - rest.len();
        let len = rest.bytes().take_while(|&b| b == self.marker).count();
        len >= self.len
            && rest[len..].trim().is_empty()
            && (self.column0.is_none() || (indent <= 3 && !line.starts_with('\t')))
    }
}

/// How the tail is shown (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Rendered as markdown, whole, each time it changes.
    Markdown,
    /// An open column-0 code fence, growing.
    Code,
    /// A long open block as plain text, growing.
    Plain,
}

/// What the view shows of the tail: how, from which block, up to where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shown {
    mode: Mode,
    block: usize,
    /// Bytes of text shown (in [`Mode::Code`], the unfinished line included).
    len: usize,
    /// [`Mode::Code`]: the end of the complete lines shown.
    lines: usize,
    /// How many of the block's cuts the view has (a plain cut is made only once the text
    /// after it has come: it may be right where the view's text ends).
    cuts: usize,
    /// Markdown could be rendered (in the browser: the renderer's chunk had come). When it
    /// comes, the tail is shown afresh: its frame was text.
    rendered: bool,
}

/// A change to the view of the tail.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TailPatch {
    /// The tail is this HTML now.
    Html(String),
    /// Text for the growing tail: `pieces[0]` is inserted (as text) before the
    /// [`OPEN_LINE`] element, in the open piece; each further one goes into a new piece
    /// ([`PIECE`]) after it, the open line moving along. Then, when `line` is given,
    /// it becomes the open line's text.
    Grow {
        pieces: Vec<String>,
        line: Option<String>,
    },
    /// The growing tail is finished as it stands: `pieces` are added as by `Grow`, then
    /// the open line's element is removed, with any text in it.
    Settle { pieces: Vec<String> },
}

/// An answer's markdown as it streams in.
#[derive(Debug, Default, Clone)]
pub(crate) struct MarkdownStream {
    text: String,
    /// Bytes of `text` already rendered into blocks.
    committed: usize,
    /// Where the next scan for a block boundary starts (a line start).
    scan_from: usize,
    fence: Option<Fence>,
    /// The end of the blank lines last seen outside a fence: the open block ends there
    /// unless the next line is indented (a list item's paragraph, sub-list or code goes
    /// on after a blank line).
    blank_end: Option<usize>,
    /// Where the open block's pieces after the first start (see [`PIECE_BYTES`]).
    cuts: Vec<usize>,
    /// Where the search for the open block's next plain cut goes on.
    cut_scan: usize,
    /// The blocks finished since [`MarkdownStream::take_blocks`], as ranges of `text`.
    finished: Vec<(usize, usize)>,
    /// The answer has ended: the tail is rendered as markdown.
    ended: bool,
    /// What the view shows of the tail; `None` when it shows nothing of it yet.
    shown: Option<Shown>,
}

impl MarkdownStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends text; the blocks it completes wait for [`MarkdownStream::take_blocks`].
    pub fn push(&mut self, chunk: &str) {
        if chunk.is_empty() {
            return;
        }
        self.ended = false;
        self.text.push_str(chunk);
        // Walk complete lines only: a line's end must have arrived.
        while let Some(offset) = self.text[self.scan_from..].find('\n') {
            let line_start = self.scan_from;
            let line_end = line_start + offset;
            self.scan_from = line_end + 1;
            let line = &self.text[line_start..line_end];
            match &self.fence {
                Some(fence) if fence.closed_by(line) => {
                    let column0 = fence.column0.is_some();
                    self.fence = None;
                    if column0 {
                        self.commit(self.scan_from);
                    }
                }
                Some(Fence {
                    column0: Some(code),
                    ..
                }) => {
                    let piece = self.cuts.last().copied().unwrap_or(code.body);
                    if code_cut(piece, self.scan_from) {
                        self.cuts.push(self.scan_from);
                    }
                }
                Some(_) => {}
                None if line.trim().is_empty() => self.blank_end = Some(self.scan_from),
                None => {
                    let opening = fence_opening(line);
                    if let Some(end) = self.blank_end.take() {
                        if !line.starts_with([' ', '\t']) {
                            self.commit(end);
                        }
                    }
                    if let Some((marker, len, indent)) = opening {
                        let column0 = (indent == 0).then(|| {
                            self.commit(line_start);
                            OpenCode {
                                line: line_start,
                                body: self.scan_from,
                            }
                        });
                        self.fence = Some(Fence {
                            marker,
                            len,
                            column0,
                        });
                    }
                }
            }
        }
        // The next line's first character tells already whether it goes on the block.
        if let (Some(end), Some(first)) =
            (self.blank_end, self.text[self.scan_from..].chars().next())
        {
            if !matches!(first, ' ' | '\t' | '\r' | '\n') {
                self.blank_end = None;
                self.commit(end);
            }
        }
        if self.mode() != Mode::Code {
            self.cut_plain();
        }
    }

    /// Finds the open block's plain cuts in the text that arrived ([`plain_cut`]).
    fn cut_plain(&mut self) {
        loop {
            let piece = self.cuts.last().copied().unwrap_or(self.committed);
            match plain_cut(&self.text, piece, self.cut_scan) {
                Ok(cut) => self.cuts.push(cut),
                Err(scanned) => {
                    self.cut_scan = scanned;
                    return;
                }
            }
        }
    }

    /// Ends the block that is open at `end`; it is rendered when taken, unless blank.
    fn commit(&mut self, end: usize) {
        if !self.text[self.committed..end].trim().is_empty() {
            self.finished.push((self.committed, end));
        }
        self.committed = end;
        self.cuts.clear();
        self.cut_scan = end;
    }

    /// The answer has ended (for now: more text would open it again): the tail is
    /// rendered as markdown, as it would be from the saved text.
    pub fn finish(&mut self) {
        self.ended = true;
    }

    /// The blocks finished since the last call, in order, as HTML.
    pub fn take_blocks(&mut self) -> Vec<String> {
        let finished = std::mem::take(&mut self.finished);
        finished
            .into_iter()
            .map(|(start, end)| render_block(&self.text[start..end]))
            .collect()
    }

    fn tail(&self) -> &str {
        &self.text[self.committed..]
    }

    fn mode(&self) -> Mode {
        if self.ended || self.tail().trim().is_empty() {
            return Mode::Markdown;
        }
        match &self.fence {
            Some(Fence {
                column0: Some(_), ..
            }) => Mode::Code,
            _ if self.tail().len() > OPEN_RENDER_LIMIT => Mode::Plain,
            _ => Mode::Markdown,
        }
    }

    /// The text the view (showing `before`) lacks, up to `end`, in pieces: each cut made
    /// since starts a new one, even one right where the view's text ends.
    fn new_pieces(&self, before: Shown, end: usize) -> Vec<String> {
        let start = match before.mode {
            Mode::Code => before.lines,
            _ => before.len,
        };
        let new_cuts = self.cuts.get(before.cuts..).unwrap_or_default();
        piece_ranges(new_cuts, start, end)
            .map(|(from, to)| self.text[from..to].to_owned())
            .collect()
    }

    /// The open block's pieces from `start` to `end` as HTML, the open line (showing
    /// `line`) at the end of the last.
    fn pieces_html(&self, html: &mut String, start: usize, end: usize, line: &str) {
        pieces_into(html, &self.text, start, end, &self.cuts);
        // Into the last piece: before its `</span>`.
        html.truncate(html.len() - "</span>".len());
        html.push_str(OPEN_LINE);
        escape_into(html, line);
        html.push_str("</span></span>");
    }

    /// The HTML of the unfinished tail: what the view shows after all the patches.
    pub fn tail_html(&self) -> String {
        let tail = self.tail();
        let mut html = String::with_capacity(tail.len() * 2);
        match (self.mode(), &self.fence) {
            _ if tail.trim().is_empty() => {}
            (
                Mode::Code,
                Some(Fence {
                    column0: Some(code),
                    ..
                }),
            ) => {
                // The code block its opening line makes; the code goes in before `</code>`.
                // Without the renderer, the opening line as text, the code after it in a
                // paragraph that keeps its line breaks.
                let shell = render(&self.text[code.line..code.body]);
                let after = match shell.rfind("</code>") {
                    Some(at) => {
                        html.push_str(&shell[..at]);
                        &shell[at..]
                    }
                    None => {
                        html.push_str(PIECES);
                        escape_into(&mut html, &self.text[code.line..code.body]);
                        "</p>\n"
                    }
                };
                let line = &self.text[self.scan_from..];
                self.pieces_html(&mut html, code.body, self.scan_from, line);
                html.push_str(after);
            }
            (Mode::Plain, _) => {
                html.push_str(PIECES);
                self.pieces_html(&mut html, self.committed, self.text.len(), "");
                html.push_str("</p>\n");
            }
            _ => html = render_block(tail),
        }
        html
    }

    /// The view will show the tail afresh (it was just created).
    pub fn forget_shown(&mut self) {
        self.shown = None;
    }

    /// What the view must change to show the tail as it is now; `None` if nothing.
    /// Within one block and mode only the text that arrived since is sent.
    pub fn take_patch(&mut self) -> Option<TailPatch> {
        let now = Shown {
            mode: self.mode(),
            block: self.committed,
            len: self.text.len(),
            lines: self.scan_from,
            cuts: self.cuts.len(),
            rendered: renders_markdown(),
        };
        let before = self.shown.replace(now);
        let same_view = before
            .filter(|b| b.mode == now.mode && b.block == now.block && b.rendered == now.rendered);
        match (now.mode, same_view) {
            (_, Some(before)) if before == now => None,
            (Mode::Code, Some(before)) => Some(TailPatch::Grow {
                pieces: self.new_pieces(before, now.lines),
                line: Some(self.text[now.lines..].to_owned()),
            }),
            (Mode::Plain, Some(before)) => Some(TailPatch::Grow {
                pieces: self.new_pieces(before, now.len),
                line: None,
            }),
            _ => {
                let html = self.tail_html();
                Some(match before {
                    Some(before)
                        if now.block == before.block
                            && before.rendered == now.rendered
                            && self.ended =>
                    {
                        self.settle(before, &html)
                    }
                    _ => TailPatch::Html(html),
                })
            }
        }
    }

    /// The patch from the growing tail as shown (`before`) to `html`, the finished
    /// tail: its last text and the open line's removal when that is all that changes
    /// (a long block staying in its pieces), else `html` whole.
    fn settle(&self, before: Shown, html: &str) -> TailPatch {
        let end = match before.mode {
            Mode::Code => self.scan_from,
            Mode::Plain => self.text.len(),
            _ => return TailPatch::Html(html.to_owned()),
        };
        let mut grown = self.clone();
        grown.ended = false;
        let open = grown.tail_html();
        let line = &self.text[end..];
        let mut marker = String::from(OPEN_LINE);
        escape_into(&mut marker, line);
        marker.push_str("</span>");
        if open.matches(&marker).count() == 1 && open.replacen(&marker, "", 1) == html {
            TailPatch::Settle {
                pieces: self.new_pieces(before, end),
            }
        } else {
            TailPatch::Html(html.to_owned())
        }
    }
}

/// Whether a code piece that starts at `piece` ends at the line end `line_end`: at the
/// first line end past [`PIECE_BYTES`].
fn code_cut(piece: usize, line_end: usize) -> bool {
    line_end - piece >= PIECE_BYTES
}

/// Where the plain piece that starts at `piece` in `text` ends, looking from `from` on:
/// after the first line end or sentence end (and the spaces after it) that starts
/// [`PIECE_BYTES`] into it, or at twice that size. Only the text decides, not how it
/// arrived, so a reload cuts where the stream did. `Err`: not in the text yet; where to
/// look from when more has come.
fn plain_cut(text: &str, piece: usize, from: usize) -> Result<usize, usize> {
    let hard = ceil_boundary(text, piece + 2 * PIECE_BYTES);
    let from = ceil_boundary(text, (piece + PIECE_BYTES).max(from));
    if from >= text.len() {
        return Err(from.min(text.len()));
    }
    let found = text[from..]
        .char_indices()
        .map(|(at, c)| (from + at, c))
        .take_while(|&(at, _)| at < hard)
        .find(|&(_, c)| matches!(c, '\n' | '。' | '！' | '？' | '；' | '.' | '!' | '?'))
        .map(|(at, c)| at + c.len_utf8());
    match found {
        Some(end) => {
            let cut = end + text[end..].bytes().take_while(|&b| b == b' ').count();
            // More spaces may yet come: the cut waits for what follows them.
            if cut < text.len() {
                Ok(cut)
            } else {
                Err(from)
            }
        }
        // At the very end the text may go on: the cut waits for it.
        None if hard < text.len() => Ok(hard),
        None => Err(text.len()),
    }
}

/// A finished block as HTML: rendered, except that a long block whose markdown is only
/// its text (a fenced code block; a paragraph with no markup, line break or run of
/// spaces) is shown in the pieces it streamed in, each a block on the page.
fn render_block(block: &str) -> String {
    let html = render(block);
    if block.len() <= OPEN_RENDER_LIMIT {
        return html;
    }
    code_in_pieces(block, &html)
        .or_else(|| paragraph_in_pieces(block, &html))
        .unwrap_or(html)
}

/// `block`, a column-0 fenced code block rendered as `html`, with its code in pieces.
fn code_in_pieces(block: &str, html: &str) -> Option<String> {
    let body = block.find('\n')? + 1;
    let (_, _, 0) = fence_opening(&block[..body - 1])? else {
        return None;
    };
    // The code ends where its closing line starts (or with the block).
    let trimmed = block.trim_end_matches('\n');
    let end = match trimmed.rfind('\n') {
        Some(at) if at + 1 > body && fence_opening(&trimmed[at + 1..]).is_some() => at + 1,
        _ => block.len(),
    };
    let shell = render(&block[..body]);
    let (before, after) = shell.split_at(shell.rfind("</code>")?);
    let mut whole = before.to_owned();
    escape_into(&mut whole, &block[body..end]);
    whole.push_str(after);
    if whole != html {
        return None;
    }
    let mut cuts = Vec::new();
    let mut piece = body;
    for (at, _) in block[body..end].match_indices('\n') {
        if code_cut(piece, body + at + 1) {
            piece = body + at + 1;
            cuts.push(piece);
        }
    }
    let mut out = before.to_owned();
    pieces_into(&mut out, block, body, end, &cuts);
    out.push_str(after);
    Some(out)
}

/// `block`, one paragraph of plain text rendered as `html`, in pieces.
fn paragraph_in_pieces(block: &str, html: &str) -> Option<String> {
    let text = block.trim_end();
    let mut whole = String::from("<p>");
    escape_into(&mut whole, text);
    whole.push_str("</p>\n");
    // `white-space: pre-wrap` shows it as a paragraph shows it.
    let pre_wrap_safe = !text.contains(['\n', '\r', '\t']) && !text.contains("  ");
    if whole != html || !pre_wrap_safe || text.starts_with(' ') {
        return None;
    }
    let mut cuts = Vec::new();
    while let Ok(cut) = plain_cut(text, cuts.last().copied().unwrap_or(0), 0) {
        cuts.push(cut);
    }
    if cuts.iter().any(|&cut| text[cut..].starts_with(' ')) {
        return None;
    }
    let mut out = String::from(PIECES);
    pieces_into(&mut out, text, 0, text.len(), &cuts);
    out.push_str("</p>\n");
    Some(out)
}

/// The ranges of `start..end` cut at `cuts`. A cut at `start` leaves an empty first piece
/// (the view's piece is already whole), one at `end` an empty last piece (where a growing
/// block's open line waits).
fn piece_ranges(
    cuts: &[usize],
    start: usize,
    end: usize,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    let inner = cuts
        .iter()
        .copied()
        .filter(move |c| (start..=end).contains(c));
    std::iter::once(start)
        .chain(inner.clone())
        .zip(inner.chain(std::iter::once(end)))
}

/// `text[start..end]` as escaped pieces ([`PIECE`]), cut at `cuts`.
fn pieces_into(out: &mut String, text: &str, start: usize, end: usize, cuts: &[usize]) {
    for (from, to) in piece_ranges(cuts, start, end) {
        out.push_str(PIECE);
        escape_into(out, &text[from..to]);
        out.push_str("</span>");
    }
}

/// The first char boundary of `text` at or after `at` (`at` itself past the end).
fn ceil_boundary(text: &str, at: usize) -> usize {
    (at..text.len())
        .find(|&at| text.is_char_boundary(at))
        .unwrap_or(at.max(text.len()))
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
    fn the_open_line_is_found_by_its_selector() {
        let (tag, class) = OPEN_LINE_SELECTOR.split_once('.').unwrap();
        assert_eq!(OPEN_LINE, format!("<{tag} class=\"{class}\">"));
    }

    #[test]
    fn code_blocks_get_a_copy_button() {
        let html = render("```rust\nfn main() {}\n```\n");
        assert!(html.contains("class=\"copy-code\""));
        assert!(html.contains("<code class=\"language-rust\">fn main() {}"));
    }

    /// The tail as a view holds it: patches applied to a string, as the page applies
    /// them to the DOM (text inserted escaped before the open-line element, new pieces
    /// opened around it).
    fn apply(view: &mut String, patch: TailPatch) {
        let escaped = |text: &str| {
            let mut out = String::new();
            escape_into(&mut out, text);
            out
        };
        match patch {
            TailPatch::Html(html) => *view = html,
            TailPatch::Settle { pieces } => {
                apply(view, TailPatch::Grow { pieces, line: None });
                let at = view.find(OPEN_LINE).expect("settling needs the open line");
                let end = at + view[at..].find("</span>").unwrap() + "</span>".len();
                view.replace_range(at..end, "");
            }
            TailPatch::Grow { pieces, line } => {
                let mut at = view.find(OPEN_LINE).expect("growing needs the open line");
                for (index, piece) in pieces.iter().enumerate() {
                    let mut text = escaped(piece);
                    if index > 0 {
                        text = format!("</span>{PIECE}{text}");
                    }
                    view.insert_str(at, &text);
                    at += text.len();
                }
                if let Some(line) = line {
                    let start = at + OPEN_LINE.len();
                    let end = start + view[start..].find("</span>").unwrap();
                    view.replace_range(start..end, &escaped(&line));
                }
            }
        }
    }

    /// Streams `pieces` and checks, after each, that the patches build `tail_html`;
    /// returns the answer's HTML (finished blocks, then the tail) before it ended and
    /// once it has.
    fn stream<'a>(pieces: impl IntoIterator<Item = &'a str>) -> (String, String) {
        let mut md = MarkdownStream::new();
        let mut blocks = String::new();
        let mut view = String::new();
        for piece in pieces {
            md.push(piece);
            blocks.extend(md.take_blocks());
            if let Some(patch) = md.take_patch() {
                apply(&mut view, patch);
            }
            assert_eq!(view, md.tail_html(), "after {piece:?}");
            assert_eq!(md.take_patch(), None, "a patch is sent once");
        }
        let open = blocks.clone() + &view;
        md.finish();
        blocks.extend(md.take_blocks());
        if let Some(patch) = md.take_patch() {
            apply(&mut view, patch);
        }
        assert_eq!(view, md.tail_html());
        (open, blocks + &view)
    }

    /// The text in pieces of `size` characters.
    fn pieces(text: &str, size: usize) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        chars.chunks(size).map(|c| c.iter().collect()).collect()
    }

    /// Split in two at every `step`-th character boundary, and in pieces of `sizes`
    /// characters, `text` shows the same HTML while open and once ended as when it comes
    /// at once; returns the latter.
    fn check_splits(text: &str, step: usize, sizes: &[usize]) -> String {
        let whole = stream([text]);
        for (at, _) in text.char_indices().skip(1).step_by(step) {
            let split = stream([&text[..at], &text[at..]]);
            assert_eq!(split, whole, "split at byte {at}");
        }
        for &size in sizes {
            let pieces = pieces(text, size);
            assert_eq!(
                stream(pieces.iter().map(String::as_str)),
                whole,
                "size {size}"
            );
        }
        whole.1
    }

    fn check_any_split(text: &str) -> String {
        check_splits(text, 1, &[1, 2, 3, 7])
    }

    #[test]
    fn an_open_code_fence_grows_and_ends_as_one_render() {
        let code = "```rust\nfn main() {\n    let a = 1 < 2 && 3 > 2;\n\n    println!(\"你好 🌏\");\n}\n```\n";
        let html = check_any_split(code);
        assert_eq!(html, render(code));
        // Without the closing line's end, and without any closing at all.
        for text in [
            &code[..code.len() - 1],
            &code[..code.len() - 4],
            "```\nx\n``",
        ] {
            assert_eq!(check_any_split(text), render(text), "{text:?}");
        }
    }

    #[test]
    fn an_open_code_fence_sends_only_new_lines() {
        let mut md = MarkdownStream::new();
        md.push("```py\nprint(1)\n");
        let Some(TailPatch::Html(first)) = md.take_patch() else {
            panic!("the fence is shown whole first");
        };
        assert!(first.starts_with("<div class=\"code-block\">"), "{first}");
        let code = format!("<code class=\"language-py\">{PIECE}print(1)\n{OPEN_LINE}");
        assert!(first.contains(&code), "{first}");
        md.push("print(2)\npri");
        assert_eq!(
            md.take_patch(),
            Some(TailPatch::Grow {
                pieces: vec!["print(2)\n".into()],
                line: Some("pri".into())
            })
        );
        // A line that may be the closing fence stays the unfinished line, then closes.
        md.push("nt(3)\n``");
        assert_eq!(
            md.take_patch(),
            Some(TailPatch::Grow {
                pieces: vec!["print(3)\n".into()],
                line: Some("``".into())
            })
        );
        md.push("`\n");
        assert_eq!(md.take_blocks().len(), 1);
        assert_eq!(md.take_patch(), Some(TailPatch::Html(String::new())));
    }

    #[test]
    fn a_long_paragraph_grows_as_text_and_ends_as_markdown() {
        let text: String = (0..2000).map(|i| format!("第{i}段 **粗** <b>。")).collect();
        assert!(text.len() > 2 * OPEN_RENDER_LIMIT);
        let mut md = MarkdownStream::new();
        md.push(&text[..OPEN_RENDER_LIMIT - 100]);
        assert!(
            matches!(md.take_patch(), Some(TailPatch::Html(html)) if html.contains("<strong>"))
        );
        // Past the limit: shown whole as text once, then only what arrives.
        let at = (OPEN_RENDER_LIMIT + 50..)
            .find(|&at| text.is_char_boundary(at))
            .unwrap();
        md.push(&text[OPEN_RENDER_LIMIT - 100..at]);
        let Some(TailPatch::Html(plain)) = md.take_patch() else {
            panic!("plain text is shown whole first");
        };
        assert!(plain.starts_with(&format!("{PIECES}{PIECE}第0段 **粗** &lt;b&gt;。")));
        md.push(&text[at..]);
        let Some(TailPatch::Grow { pieces, line: None }) = md.take_patch() else {
            panic!("then it grows");
        };
        assert_eq!(pieces.concat(), text[at..]);
        // Pieces end after a sentence, about PIECE_BYTES long.
        assert!(pieces.len() > 3, "{}", pieces.len());
        for piece in &pieces[1..pieces.len() - 1] {
            assert!(piece.ends_with('。'), "{piece}");
            assert!((PIECE_BYTES..PIECE_BYTES + 40).contains(&piece.len()));
        }
        md.finish();
        let Some(TailPatch::Html(done)) = md.take_patch() else {
            panic!("the end renders markdown");
        };
        assert_eq!(done, render(&text));
    }

    #[test]
    fn a_paragraph_in_any_pieces_ends_as_one_render() {
        let short = "一段 **粗体** 和 `代码`，\n第二行 [链接](https://example.com)。";
        assert_eq!(check_any_split(short), render(short));
        // Long: pieces cut after sentences, after lines, and (with neither) by size.
        let long: String = (0..1500)
            .map(|i| {
                format!(
                    "第{i}段 *斜* & <i>{}",
                    if i % 50 == 0 { "\n" } else { "。" }
                )
            })
            .collect();
        assert!(long.len() > OPEN_RENDER_LIMIT + 4 * PIECE_BYTES);
        assert_eq!(check_splits(&long, 997, &[61, 1000]), render(&long));
        // Plain text stays in its pieces: the same text, the same paragraph.
        let unbroken = "长".repeat(6000);
        let html = check_splits(&unbroken, 997, &[61, 1000]);
        assert!(html.starts_with(PIECES), "{html}");
        assert_eq!(without_pieces(&html), render(&unbroken));
    }

    /// `html` with its pieces joined: what it would be rendered whole.
    fn without_pieces(html: &str) -> String {
        // The answer's own `<` is escaped: every span is a piece.
        html.replace(PIECES, "<p>")
            .replace(PIECE, "")
            .replace("</span>", "")
    }

    /// Streams `text` in two halves, showing each, and ends it: the last patch.
    fn last_patch(text: &str) -> Option<TailPatch> {
        let half = ceil_boundary(text, text.len() / 2);
        let mut md = MarkdownStream::new();
        for part in [&text[..half], &text[half..]] {
            md.push(part);
            md.take_blocks();
            md.take_patch();
        }
        md.finish();
        md.take_patch()
    }

    #[test]
    fn a_long_plain_paragraph_or_code_block_ends_in_its_pieces() {
        let chinese: String = (0..3000).map(|i| format!("第{i}段。")).collect();
        let english = "This is one sentence, and it ends here. ".repeat(300);
        let english = english.trim_end();
        let code: String = (0..3000)
            .map(|i| format!("let v{i} = {i};{}", if i % 4 == 3 { "\n" } else { " " }))
            .collect();
        let code = format!("```rust\n{code}\n```");
        for text in [chinese.as_str(), english, &code] {
            // The end removes the open line; everything else was shown already.
            assert_eq!(
                last_patch(text),
                Some(TailPatch::Settle {
                    pieces: vec![String::new()]
                }),
                "{}",
                &text[..40]
            );
            let html = check_splits(text, 4999, &[333]);
            assert!(html.matches(PIECE).count() > 3, "{html}");
            assert!(
                !html.contains(&format!("{PIECE} ")),
                "no piece starts with a space"
            );
            assert_eq!(without_pieces(&html), render(text));
        }
        // A sentence at a time (as a model sends it): each cut is made when the text
        // after it arrives, and still starts a new piece on the page.
        let sentences: Vec<String> = (0..3000).map(|i| format!("第{i}段。")).collect();
        let (_, html) = stream(sentences.iter().map(String::as_str));
        assert_eq!(html, check_splits(&chinese, 4999, &[]));
        // Markup, a line break or a run of spaces: rendered whole at the end.
        let (first, rest) = chinese.split_at(ceil_boundary(&chinese, 6000));
        for text in [
            format!("**粗**{chinese}"),
            format!("{first}\n{rest}"),
            format!("{first}  {rest}"),
        ] {
            let Some(TailPatch::Html(html)) = last_patch(&text) else {
                panic!("rendered whole");
            };
            assert_eq!(html, render(&text));
        }
    }

    #[test]
    fn a_long_code_fence_in_any_pieces_ends_as_one_render() {
        let lines: String = (0..600).map(|i| format!("let v{i} = {i} < 2;\n")).collect();
        let code = format!("```rust\n{lines}```");
        assert!(code.len() > 4 * PIECE_BYTES);
        let html = check_splits(&code, 101, &[5, 61]);
        assert!(html.matches(PIECE).count() > 4, "{html}");
        assert_eq!(without_pieces(&html), render(&code));
        let mut md = MarkdownStream::new();
        md.push(&code[..code.len() - 3]);
        let html = md.tail_html();
        assert!(html.matches(PIECE).count() > 4, "{html}");
    }

    /// Streaming in any pieces gives the same blocks and tail as one piece.
    #[test]
    fn blocks_commit_at_blank_lines_and_around_fences() {
        let text = "# 标题\n\n第一段。\n\n```\ncode\n\nstill code\n```\n\n- a\n- b\n\n结尾";
        for size in [1, 2, 3, 7, text.len()] {
            let mut stream = MarkdownStream::new();
            let mut blocks = Vec::new();
            for piece in pieces(text, size) {
                stream.push(&piece);
                blocks.extend(stream.take_blocks());
            }
            assert_eq!(blocks.len(), 4, "size {size}: {blocks:?}");
            assert!(blocks[2].contains("still code"), "the fence is one block");
            assert_eq!(stream.tail_html(), "<p>结尾</p>\n");
            assert_eq!(stream.text, text);
        }
        // A fence right after a paragraph's line, text right after the fence.
        let text = "代码如下：\n```js\nlet a = `x`;\n```\n之后。\n- 列表\n  ```\n  缩进\n\n  的代码\n  ```\n";
        let mut md = MarkdownStream::new();
        md.push(text);
        let blocks = md.take_blocks();
        assert_eq!(
            blocks,
            [render("代码如下：\n"), render("```js\nlet a = `x`;\n```\n")]
        );
        assert_eq!(
            md.tail_html(),
            render("之后。\n- 列表\n  ```\n  缩进\n\n  的代码\n  ```\n")
        );
        assert_eq!(check_any_split(text), blocks.concat() + &md.tail_html());
    }

    /// A list item's sub-list, paragraphs and code go on after blank lines (as models
    /// write them): the item stays one block, rendered as when it comes at once.
    #[test]
    fn a_list_item_goes_on_after_blank_lines() {
        let item =
            "1. 安装\n\n    运行命令：\n\n    ```bash\n    cargo run\n\n    ```\n\n   - 子项\n\n";
        let text = format!("步骤：\n\n{item}2. 使用\n\n结尾");
        let html = check_splits(&text, 3, &[1, 2, 7]);
        let expected = [
            render("步骤：\n\n"),
            render(item),
            render("2. 使用\n\n"),
            render("结尾"),
        ];
        assert_eq!(html, expected.concat());
        assert!(
            render(item).contains("<ul>\n<li>子项</li>"),
            "{}",
            render(item)
        );
        assert!(render(item).contains("<code class=\"language-bash\">cargo run"));
        // An indented line after a paragraph: code, in the same block as when it comes
        // at once.
        let text = "段落\n\n    缩进代码\n\n之后";
        assert_eq!(check_any_split(text), render(text));
    }

    #[test]
    fn inline_code_is_no_fence_and_markdown_stays_safe_while_open() {
        let mut md = MarkdownStream::new();
        md.push("```a`b```\n\n");
        md.push("```\n<script>alert(1)</script>\n<img");
        assert_eq!(md.take_blocks(), [render("```a`b```\n\n")]);
        let html = md.tail_html();
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        let plain: String = "<img src=x onerror=alert(1)>".repeat(400);
        let mut md = MarkdownStream::new();
        md.push(&plain);
        let html = md.tail_html();
        assert!(html.starts_with(PIECES), "{html}");
        assert!(!html.contains("<img"), "{html}");
    }
}
