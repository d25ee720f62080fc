//! Writing frames as SSE: one `data:` line of compact JSON, then a blank line.

use serde::Serialize;

/// `data: <json>\n\n`. serde_json escapes every newline inside strings, so the
/// JSON always fits on one `data:` line.
pub fn encode<T: Serialize>(frame: &T) -> String {
    let json = serde_json::to_string(frame).unwrap_or_else(|_| String::from("{}"));
    let mut out = String::with_capacity(json.len() + 8);
    out.push_str("data: ");
    out.push_str(&json);
    out.push_str("\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;

    #[test]
    fn one_line_per_frame_even_with_newlines_in_text() {
        let text = encode(&Frame::Chunk {
            seq: 0,
            content: "a\nb\r\n".into(),
        });
        assert_eq!(
            text,
            "data: {\"type\":\"chunk\",\"seq\":0,\"content\":\"a\\nb\\r\\n\"}\n\n"
        );
    }
}
