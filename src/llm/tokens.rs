//! Token estimates with tiktoken (o200k_base). Providers' own tokenizers differ a little,
//! so a provider-reported `usage` always wins; the estimate is the fallback when a stream
//! ends without one (interrupted, or a provider that does not report usage). The prompt
//! is counted only when something needs the count (`ChatJob::prompt_tokens`); with DEBUG
//! logs on, the completion is always counted, to compare.
//!
//! The encoder is built once per process (tiktoken-rs's singleton); building it costs
//! far more than counting a page.

use tiktoken_rs::CoreBPE;

use crate::protocol::ChatMessage;

fn encoder() -> &'static CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

/// Builds the encoder now, so the first request does not pay for it.
pub fn warm_up() {
    let _ = encoder();
}

/// Tokens in a piece of text.
pub fn count_text(text: &str) -> u32 {
    let count = encoder().encode_ordinary(text).len();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Each role's name is one token (`system`, `user`, `assistant`; checked in the tests),
/// so a message's framing costs no call into the encoder.
const ROLE_TOKENS: u32 = 1;

/// Tokens of a chat prompt, as OpenAI's cookbook counts them: 4 per message for the
/// framing, plus the role and the content, plus 2 to prime the reply.
pub fn count_prompt(messages: &[ChatMessage]) -> u32 {
    framed(messages, count_text)
}

/// At least [`count_prompt`], without the encoder: each token stands for one byte or more.
pub fn prompt_bound(messages: &[ChatMessage]) -> u32 {
    framed(messages, |content| {
        u32::try_from(content.len()).unwrap_or(u32::MAX)
    })
}

/// The prompt's framing around each message's content, counted by `content_tokens`.
fn framed(messages: &[ChatMessage], content_tokens: impl Fn(&str) -> u32) -> u32 {
    let framing = messages
        .iter()
        .map(|m| (4 + ROLE_TOKENS).saturating_add(content_tokens(&m.content)));
    framing.fold(2u32, u32::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Role;

    #[test]
    fn counts_text() {
        assert_eq!(count_text(""), 0);
        assert_eq!(count_text("hello"), 1);
        let chinese = count_text("流式输出让用户更快看到回答");
        assert!((4..=14).contains(&chinese), "{chinese}");
    }

    #[test]
    fn every_role_is_one_token() {
        for role in [Role::System, Role::User, Role::Assistant] {
            assert_eq!(count_text(role.as_str()), ROLE_TOKENS, "{role:?}");
        }
    }

    #[test]
    fn prompt_framing() {
        let messages = [
            ChatMessage {
                role: Role::System,
                content: "hello".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "hello".into(),
            },
        ];
        // 2 + (4 + 1 + 1) + (4 + 1 + 1)
        assert_eq!(count_prompt(&messages), 14);
        assert_eq!(count_prompt(&[]), 2);
        // 2 + (4 + 1 + 5) + (4 + 1 + 5)
        assert_eq!(prompt_bound(&messages), 22);
    }

    #[test]
    fn the_bound_is_never_below_the_count() {
        let texts = [
            "",
            "hello",
            "流式输出让用户更快看到回答",
            "🦀🦀🦀",
            " \n\t  x",
            "aaaaaaaaaaaaaaaaaaaa",
        ];
        for text in texts {
            let messages = [ChatMessage {
                role: Role::User,
                content: text.into(),
            }];
            assert!(
                prompt_bound(&messages) >= count_prompt(&messages),
                "{text:?}"
            );
        }
    }
}
