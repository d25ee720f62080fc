//! The live state of every provider's keys, for the 服务配置 tab: what
//! [`KeyRing::snapshot`](super::keys::KeyRing::snapshot) says, after pulling the rests
//! other instances recorded, with each rest's end as a unix time the browser can show.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::client::LlmClient;
use super::keys::{KeyState, ParkReason, Rest};
use crate::api::{KeyStateKind, KeyStatus, ParkedBecause, ProviderKeys};

impl LlmClient {
    /// Every provider's keys as they stand now, in display order. `tails`: show the last
    /// four characters of long keys (`key#1 ••••3f9a`), else only `key#1 ••••`.
    pub async fn key_states(&self, tails: bool) -> Vec<ProviderKeys> {
        let mut providers = Vec::new();
        for provider in &self.config().providers {
            let Some(ring) = self.ring(&provider.id) else {
                continue;
            };
            if let Some(shared) = self.shared_rests() {
                ring.apply_rests(&shared.pull(ring.rest_names()).await);
            }
            let (now, now_ms) = (Instant::now(), unix_ms(SystemTime::now()));
            let keys = ring.snapshot(now).into_iter();
            providers.push(ProviderKeys {
                provider: provider.id.clone(),
                keys: keys.map(|key| status(key, now_ms, tails)).collect(),
            });
        }
        providers
    }
}

/// One key as the browser sees it; `now_ms` is the snapshot's instant in unix ms.
fn status(key: KeyState, now_ms: i64, tails: bool) -> KeyStatus {
    let until = |left: Duration| Some(now_ms.saturating_add(millis(left)));
    let (state, until_unix_ms, reason) = match key.rest {
        Rest::InRotation => (KeyStateKind::Rotation, None, None),
        Rest::Cooling { left } => (KeyStateKind::Cooling, until(left), None),
        Rest::Parked { left, reason } => (KeyStateKind::Parked, until(left), Some(because(reason))),
    };
    KeyStatus {
        id_masked: if tails {
            key.masked
        } else {
            format!("{} ••••", key.id)
        },
        account: key.account,
        state,
        until_unix_ms,
        reason,
    }
}

fn because(reason: ParkReason) -> ParkedBecause {
    match reason {
        ParkReason::Rejected => ParkedBecause::Rejected,
        ParkReason::OutOfBalance => ParkedBecause::OutOfBalance,
        ParkReason::Elsewhere => ParkedBecause::Elsewhere,
    }
}

fn unix_ms(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map_or(0, millis)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::llm::config::tests::SETTINGS;
    use crate::llm::LlmConfig;

    const SECRET: &str = "sk-key-state-secret-0123456789";

    fn client() -> LlmClient {
        let env = [
            ("DEEPSEEK_API_KEY", SECRET),
            ("DEEPSEEK_API_KEY_1", "sk-key-state-secret-abcdefghij"),
            ("DEEPSEEK_API_KEY_1_ACCOUNT", "team-b"),
        ];
        let config = LlmConfig::from_parts(SETTINGS, env).unwrap();
        LlmClient::new(Arc::new(config)).unwrap()
    }

    #[tokio::test]
    async fn states_carry_their_end_and_reason_but_no_secret() {
        let client = client();
        let ring = client.ring("deepseek").unwrap();
        let now = Instant::now();
        ring.cool_account(0, now + Duration::from_secs(30));
        ring.park_key(1, now + Duration::from_secs(300), ParkReason::OutOfBalance);
        let before = unix_ms(SystemTime::now());
        let states = client.key_states(true).await;
        let after = unix_ms(SystemTime::now());
        assert_eq!(states.len(), 1);
        let [cooling, parked] = &states[0].keys[..] else {
            panic!("{states:?}")
        };
        assert_eq!(
            (cooling.state, cooling.reason, cooling.id_masked.as_str()),
            (KeyStateKind::Cooling, None, "key#1 ••••6789")
        );
        let ends = cooling.until_unix_ms.unwrap();
        assert!((before + 29_000..=after + 30_000).contains(&ends), "{ends}");
        assert_eq!(
            (parked.state, parked.reason, parked.account.as_str()),
            (
                KeyStateKind::Parked,
                Some(ParkedBecause::OutOfBalance),
                "team-b"
            )
        );
        let tailless = client.key_states(false).await;
        assert_eq!(tailless[0].keys[1].id_masked, "key#2 ••••");
        let json = serde_json::to_string(&states).unwrap();
        assert!(!json.contains("sk-key-state"), "{json}");
    }
}
