//! Token counting and cost of a 100-page contract (~200,000 mixed Chinese and English
//! characters), with the encoder built once per process. Run: `cargo bench --features ssr`.

use streamai::llm::cost::Price;
use streamai::llm::tokens;
use streamai::protocol::{ChatMessage, Role, Usage, UsageSource};

fn main() {
    tokens::warm_up();
    divan::main();
}

/// About 200,000 characters: contract-like Chinese clauses with English terms and numbers.
fn contract() -> String {
    let clause = "第{n}条 甲方（Party A）应于 2026 年 12 月 31 日前向乙方（Party B）支付服务费人民币 {n},000 元整；\
                  如逾期付款，每日按未付金额的 0.05% 支付违约金（late payment penalty）。\
                  The parties agree that this Agreement shall be governed by the laws of the PRC. ";
    let mut text = String::new();
    let mut n = 1;
    while text.chars().count() < 200_000 {
        text.push_str(&clause.replace("{n}", &n.to_string()));
        n += 1;
    }
    text
}

#[divan::bench]
fn count_contract(bencher: divan::Bencher) {
    let text = contract();
    bencher.bench(|| tokens::count_text(divan::black_box(&text)));
}

#[divan::bench]
fn count_and_cost_contract_prompt(bencher: divan::Bencher) {
    let messages = vec![
        ChatMessage {
            role: Role::System,
            content: "你是一名合同审查助手。".into(),
        },
        ChatMessage {
            role: Role::User,
            content: contract(),
        },
    ];
    let price = Price::new(2_000_000, 3_000_000);
    bencher.bench(|| {
        let prompt_tokens = tokens::count_prompt(divan::black_box(&messages));
        let usage = Usage {
            prompt_tokens,
            completion_tokens: 0,
            total_tokens: prompt_tokens,
            source: UsageSource::Tiktoken,
        };
        price.cost(&usage)
    });
}
