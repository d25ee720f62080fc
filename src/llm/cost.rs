//! Exact cost arithmetic. Prices are held as micro-yuan per million tokens, so
//! `tokens × price` is a whole number of pico-yuan (10⁻¹² ¥): no float ever touches money.

use crate::protocol::{Cost, Usage, Yuan};

/// Input and output price of a model, in micro-yuan per million tokens
/// (2 CNY per million = 2_000_000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub input_micro_per_m: u64,
    pub output_micro_per_m: u64,
}

impl Price {
    pub const FREE: Price = Price::new(0, 0);

    pub const fn new(input_micro_per_m: u64, output_micro_per_m: u64) -> Self {
        Price {
            input_micro_per_m,
            output_micro_per_m,
        }
    }

    /// Parses a decimal CNY-per-million string (`"2"`, `"0.8"`, `"1.08"`) into micro-yuan,
    /// with the one money parser ([`Yuan::parse`]). At most six decimals: a finer price
    /// is refused rather than rounded.
    pub fn parse_per_million(text: &str) -> Option<u64> {
        const PICO_PER_MICRO: u128 = 1_000_000;
        let Yuan(pico) = Yuan::parse(text.trim())?;
        if pico % PICO_PER_MICRO != 0 {
            return None;
        }
        u64::try_from(pico / PICO_PER_MICRO).ok()
    }

    /// The input price as configured, in CNY per million tokens (`"2"`, `"0.8"`).
    pub fn input_display(&self) -> String {
        Yuan(u128::from(self.input_micro_per_m) * 1_000_000).to_string()
    }

    /// The output price in CNY per million tokens.
    pub fn output_display(&self) -> String {
        Yuan(u128::from(self.output_micro_per_m) * 1_000_000).to_string()
    }

    /// The exact price of `prompt` input and `completion` output tokens.
    pub fn charge(&self, prompt: u32, completion: u32) -> Yuan {
        Yuan::of_tokens(prompt, self.input_micro_per_m)
            + Yuan::of_tokens(completion, self.output_micro_per_m)
    }

    /// The cost of a request's tokens.
    pub fn cost(&self, usage: &Usage) -> Cost {
        let input = Yuan::of_tokens(usage.prompt_tokens, self.input_micro_per_m);
        let output = Yuan::of_tokens(usage.completion_tokens, self.output_micro_per_m);
        Cost {
            currency: "CNY".into(),
            input: input.to_string(),
            output: output.to_string(),
            total: (input + output).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::UsageSource;

    fn check(price: (&str, &str), tokens: (u32, u32), expected: (&str, &str, &str)) {
        let price = Price::new(
            Price::parse_per_million(price.0).unwrap(),
            Price::parse_per_million(price.1).unwrap(),
        );
        let usage = Usage {
            prompt_tokens: tokens.0,
            completion_tokens: tokens.1,
            total_tokens: tokens.0.saturating_add(tokens.1),
            source: UsageSource::Provider,
        };
        let cost = price.cost(&usage);
        assert_eq!(
            (
                cost.input.as_str(),
                cost.output.as_str(),
                cost.total.as_str()
            ),
            expected
        );
    }

    #[test]
    fn deepseek_v3_2_prices() {
        // 2 CNY and 3 CNY per million tokens.
        check(("2", "3"), (1_000_000, 1_000_000), ("2", "3", "5"));
        check(("2", "3"), (123, 456), ("0.000246", "0.001368", "0.001614"));
        check(("2", "3"), (1, 1), ("0.000002", "0.000003", "0.000005"));
        check(("2", "3"), (0, 0), ("0", "0", "0"));
    }

    #[test]
    fn fractional_prices_stay_exact() {
        // 0.1 + 0.2 style drift is impossible: 0.15 ¥/M × 7 tokens = 0.00000105 ¥ exactly.
        check(
            ("0.15", "1.5"),
            (7, 3),
            ("0.00000105", "0.0000045", "0.00000555"),
        );
        check(
            ("1.08", "4.32"),
            (u32::MAX, u32::MAX),
            ("4638.5646786", "18554.2587144", "23192.823393"),
        );
    }

    #[test]
    fn price_parsing_refuses_what_it_cannot_hold_exactly() {
        assert_eq!(Price::parse_per_million("0.8"), Some(800_000));
        assert_eq!(Price::parse_per_million("12"), Some(12_000_000));
        assert_eq!(Price::parse_per_million("0.0000001"), None);
        assert_eq!(Price::parse_per_million("-1"), None);
        assert_eq!(Price::parse_per_million("1e3"), None);
        assert_eq!(Price::parse_per_million(""), None);
        assert_eq!(Price::parse_per_million(".5"), None);
        // The same rules as every other amount of money (`Yuan::parse`).
        assert_eq!(Price::parse_per_million("1."), None);
    }
}
