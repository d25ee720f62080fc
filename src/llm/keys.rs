//! The key ring: several API keys of one provider, used round-robin to spread load.
//!
//! Chinese providers rate-limit per *account*, not per key (SiliconFlow, DashScope and
//! Hunyuan say so), so a 429 cools the whole account of the key that got it: by default
//! every key of a provider shares one account and one cooldown, and rotation never
//! dodges a 429. Keys labelled with different accounts (`{ID}_API_KEY_N_ACCOUNT`) cool
//! apart, so a retry may go at once to another account's key. A key refused as invalid
//! (401) is parked alone; an account out of balance is parked whole.
//! Keys never leave this module except into the `Authorization` header; everything
//! else names a key by its id, `key#1`, `key#2`, …. [`KeyRing::snapshot`] tells the
//! settings page how each key stands, masked.

use std::sync::Mutex;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::config::ProviderKey;

/// Why no key can be used right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoKey {
    /// Some account is only cooling down after a 429; the first is free at this instant.
    CoolingUntil(Instant),
    /// Every key was refused or its account is out of balance.
    AllParked,
}

/// Why a key is parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParkReason {
    /// Refused as invalid: a 401, or an explicit invalid-key code.
    Rejected,
    /// Its account is out of balance: a 402, or a 429 `insufficient_quota`.
    OutOfBalance,
    /// Another instance parked it (a rest shared through Redis); why is not shared.
    Elsewhere,
}

/// How one key stands at an instant, for the settings page: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyState {
    /// `key#1`.
    pub id: String,
    /// `key#1 ••••3f9a`, as [`mask_all`] gives it.
    pub masked: String,
    /// The key's account label; `""` when unlabelled.
    pub account: String,
    pub rest: Rest,
}

/// Whether a key is used, and if not, for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rest {
    InRotation,
    /// Its account is rate limited (a 429).
    Cooling {
        left: Duration,
    },
    /// Parked: refused, or its account out of balance.
    Parked {
        left: Duration,
        reason: ParkReason,
    },
}

/// A shared rest that ends within this of the key's own parking is that parking read
/// back (clocks and millisecond rounding differ); a later one was recorded elsewhere.
const SAME_REST: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<ProviderKey>,
    /// Per key: the index of its account in `RingState::account_cooling`.
    account_of: Vec<usize>,
    /// The names of the rests other instances share (`REDIS_URL`): one per account,
    /// then one per key ([`KeyRing::rest_names`]).
    rest_names: Vec<String>,
    state: Mutex<RingState>,
}

#[derive(Debug)]
struct RingState {
    next: usize,
    /// Per key: parked (refused, or its account out of balance) until this instant.
    parked_until: Vec<Option<Instant>>,
    /// Per key: why it was last parked.
    park_reason: Vec<Option<ParkReason>>,
    /// Per account: rate limited until this instant.
    account_cooling: Vec<Option<Instant>>,
}

/// Masked forms for the settings page: `key#1 ••••3f9a` (last four of long keys only).
pub fn mask_all(keys: &[ProviderKey]) -> Vec<String> {
    let mask = |(index, key): (usize, &ProviderKey)| {
        let chars: Vec<char> = key.secret.expose_secret().chars().collect();
        if chars.len() >= 16 {
            let tail: String = chars[chars.len() - 4..].iter().collect();
            format!("{} ••••{tail}", key_id(index))
        } else {
            format!("{} ••••", key_id(index))
        }
    };
    keys.iter().enumerate().map(mask).collect()
}

/// The display id of key `index` (0-based): `key#1` for the first.
pub fn key_id(index: usize) -> String {
    format!("key#{}", index + 1)
}

/// A key's name outside this process: the first 64 bits of its SHA-256, in hex. The
/// same on every instance, whatever the keys' order; the key cannot be recovered from it.
fn fingerprint(key: &ProviderKey) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.secret.expose_secret().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl KeyRing {
    /// The ring of `provider`'s keys (the provider names its accounts' shared rests).
    pub fn named(provider: &str, keys: Vec<ProviderKey>) -> Self {
        let mut accounts: Vec<&str> = Vec::new();
        let account_of = keys
            .iter()
            .map(
                |key| match accounts.iter().position(|a| *a == key.account) {
                    Some(index) => index,
                    None => {
                        accounts.push(&key.account);
                        accounts.len() - 1
                    }
                },
            )
            .collect();
        let rest_names = accounts
            .iter()
            .map(|account| format!("streamai:rest:account:{provider}:{account}"))
            .chain(
                keys.iter()
                    .map(|key| format!("streamai:rest:key:{}", fingerprint(key))),
            )
            .collect();
        let state = RingState {
            next: 0,
            parked_until: vec![None; keys.len()],
            park_reason: vec![None; keys.len()],
            account_cooling: vec![None; accounts.len()],
        };
        KeyRing {
            keys,
            account_of,
            rest_names,
            state: Mutex::new(state),
        }
    }

    /// Names under which rests are shared: every account's cooldown, then every key's
    /// parking, in that order.
    pub(crate) fn rest_names(&self) -> &[String] {
        &self.rest_names
    }

    /// Applies rests recorded elsewhere, one per [`KeyRing::rest_names`] entry. A rest
    /// never shortens a longer one. A parking that outlasts this ring's own is marked
    /// [`ParkReason::Elsewhere`].
    pub(crate) fn apply_rests(&self, untils: &[Option<Instant>]) {
        let mut state = self.lock();
        let accounts = state.account_cooling.len();
        for (index, until) in untils.iter().enumerate() {
            let Some(until) = *until else { continue };
            match index.checked_sub(accounts) {
                None => lengthen(&mut state.account_cooling[index], until),
                Some(key) if key < self.keys.len() => {
                    let own = state.parked_until[key].filter(|own| *own + SAME_REST >= until);
                    if own.is_none() {
                        state.park_reason[key] = Some(ParkReason::Elsewhere);
                    }
                    lengthen(&mut state.parked_until[key], until);
                }
                Some(_) => {}
            }
        }
    }

    /// The rests touching key `index` to share after a refusal: its account's cooldown
    /// and the parking of every key of that account.
    pub(crate) fn rests_of(&self, index: usize) -> Vec<(String, Instant)> {
        let state = self.lock();
        let account = self.account_of[index];
        let accounts = state.account_cooling.len();
        let cooling = state.account_cooling[account].map(|until| (account, until));
        let parked = (0..self.keys.len())
            .filter(|&key| self.account_of[key] == account)
            .filter_map(|key| state.parked_until[key].map(|until| (accounts + key, until)));
        cooling
            .into_iter()
            .chain(parked)
            .map(|(name, until)| (self.rest_names[name].clone(), until))
            .collect()
    }

    /// The next usable key in round-robin order, skipping parked keys and keys whose
    /// account is cooling down.
    pub fn acquire(&self, now: Instant) -> Result<usize, NoKey> {
        let mut state = self.lock();
        let count = self.keys.len();
        for offset in 0..count {
            let index = (state.next + offset) % count;
            if self.ready(&state, index, now) {
                state.next = (index + 1) % count;
                return Ok(index);
            }
        }
        self.why_none(&state, now)
    }

    /// True when some key could be used at `now` (nothing is taken).
    pub fn has_ready(&self, now: Instant) -> bool {
        let state = self.lock();
        (0..self.keys.len()).any(|index| self.ready(&state, index, now))
    }

    /// A 429 on key `index`: its whole account rests until `until`.
    /// A shorter rest never shortens a longer one.
    pub fn cool_account(&self, index: usize, until: Instant) {
        let mut state = self.lock();
        lengthen(&mut state.account_cooling[self.account_of[index]], until);
    }

    /// Key `index` alone rests until `until`, for `reason` (a 401 parks the key alone).
    pub(crate) fn park_key(&self, index: usize, until: Instant, reason: ParkReason) {
        let mut state = self.lock();
        lengthen(&mut state.parked_until[index], until);
        state.park_reason[index] = Some(reason);
    }

    /// Key `index`'s account is out of balance: every key of it rests until `until`.
    pub(crate) fn park_account(&self, index: usize, until: Instant, reason: ParkReason) {
        let account = self.account_of[index];
        for key in 0..self.keys.len() {
            if self.account_of[key] == account {
                self.park_key(key, until, reason);
            }
        }
    }

    /// How every key stands at `now`, in order: parked, else cooling with its account,
    /// else in rotation. Keys appear masked only.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<KeyState> {
        let state = self.lock();
        let left = |slot: Option<Instant>| {
            slot.map(|until| until.saturating_duration_since(now))
                .filter(|left| !left.is_zero())
        };
        let rest = |index: usize| {
            if let Some(left) = left(state.parked_until[index]) {
                let reason = state.park_reason[index].unwrap_or(ParkReason::Elsewhere);
                return Rest::Parked { left, reason };
            }
            match left(state.account_cooling[self.account_of[index]]) {
                Some(left) => Rest::Cooling { left },
                None => Rest::InRotation,
            }
        };
        mask_all(&self.keys)
            .into_iter()
            .enumerate()
            .map(|(index, masked)| KeyState {
                id: key_id(index),
                masked,
                account: self.keys[index].account.clone(),
                rest: rest(index),
            })
            .collect()
    }

    /// The secret itself, for the `Authorization` header only.
    pub(crate) fn secret(&self, index: usize) -> &str {
        self.keys[index].secret.expose_secret()
    }

    /// Replaces any key that appears in `text` (an upstream error message may echo it).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (index, key) in self.keys.iter().enumerate() {
            let key = key.secret.expose_secret();
            if key.len() >= 4 && out.contains(key) {
                out = out.replace(key, &key_id(index));
            }
        }
        out
    }

    fn ready(&self, state: &RingState, index: usize, now: Instant) -> bool {
        let free = |slot: Option<Instant>| slot.is_none_or(|until| until <= now);
        free(state.parked_until[index]) && free(state.account_cooling[self.account_of[index]])
    }

    /// No key is ready: wait for the soonest cooling account whose keys are not parked.
    fn why_none(&self, state: &RingState, now: Instant) -> Result<usize, NoKey> {
        let soonest = (0..self.keys.len())
            .filter(|&index| state.parked_until[index].is_none_or(|until| until <= now))
            .filter_map(|index| state.account_cooling[self.account_of[index]])
            .min();
        match soonest {
            Some(until) => Err(NoKey::CoolingUntil(until)),
            None => Err(NoKey::AllParked),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RingState> {
        // A panic while holding this lock cannot leave the state inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sets a rest to end at `until`, unless it already ends later.
fn lengthen(slot: &mut Option<Instant>, until: Instant) {
    *slot = Some(slot.map_or(until, |current| current.max(until)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    /// Keys `sk-test-key-number-N`, in the accounts given (one letter per key).
    fn keys(accounts: &str) -> Vec<ProviderKey> {
        accounts
            .chars()
            .enumerate()
            .map(|(i, account)| ProviderKey {
                secret: SecretString::from(format!("sk-test-key-number-{i}")),
                account: account.to_string(),
            })
            .collect()
    }

    fn ring(accounts: &str) -> KeyRing {
        KeyRing::named("p", keys(accounts))
    }

    fn take(ring: &KeyRing, now: Instant, n: usize) -> Vec<usize> {
        (0..n).map(|_| ring.acquire(now).unwrap()).collect()
    }

    #[test]
    fn round_robin_order() {
        assert_eq!(take(&ring("aaa"), Instant::now(), 7), [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn a_429_cools_the_whole_account() {
        let ring = ring("aaa");
        let now = Instant::now();
        ring.cool_account(1, now + Duration::from_secs(2));
        assert!(!ring.has_ready(now));
        assert_eq!(
            ring.acquire(now),
            Err(NoKey::CoolingUntil(now + Duration::from_secs(2)))
        );
        assert_eq!(take(&ring, now + Duration::from_secs(2), 3), [0, 1, 2]);
    }

    #[test]
    fn other_accounts_stay_ready() {
        let ring = ring("aab");
        let now = Instant::now();
        ring.cool_account(0, now + Duration::from_secs(5));
        assert_eq!(take(&ring, now, 3), [2, 2, 2]);
        ring.cool_account(2, now + Duration::from_secs(3));
        // A shorter rest never shortens a longer one; the soonest account is reported.
        ring.cool_account(0, now + Duration::from_secs(1));
        assert_eq!(
            ring.acquire(now),
            Err(NoKey::CoolingUntil(now + Duration::from_secs(3)))
        );
    }

    #[test]
    fn parked_keys_are_not_waited_for() {
        let ring = ring("ab");
        let now = Instant::now();
        ring.park_key(0, now + Duration::from_secs(300), ParkReason::Rejected);
        assert_eq!(take(&ring, now, 2), [1, 1]);
        ring.park_account(1, now + Duration::from_secs(300), ParkReason::OutOfBalance);
        assert_eq!(ring.acquire(now), Err(NoKey::AllParked));
        // A cooling account whose only key is parked is not worth waiting for either.
        ring.cool_account(1, now + Duration::from_secs(5));
        assert_eq!(ring.acquire(now), Err(NoKey::AllParked));
    }

    #[test]
    fn out_of_balance_parks_the_account() {
        let ring = ring("aab");
        let now = Instant::now();
        ring.park_account(1, now + Duration::from_secs(300), ParkReason::OutOfBalance);
        assert_eq!(take(&ring, now, 2), [2, 2]);
    }

    #[test]
    fn rests_travel_by_name_between_rings_of_the_same_keys() {
        let here = KeyRing::named("p", keys("aab"));
        let there = KeyRing::named("p", keys("aab"));
        assert_eq!(here.rest_names(), there.rest_names());
        assert_eq!(here.rest_names().len(), 2 + 3);
        assert!(here.rest_names().iter().all(|n| !n.contains("sk-test")));
        let now = Instant::now();
        here.cool_account(1, now + Duration::from_secs(5));
        here.park_key(2, now + Duration::from_secs(300), ParkReason::Rejected);
        let shared = here.rests_of(0);
        assert_eq!(
            shared,
            [(here.rest_names()[0].clone(), now + Duration::from_secs(5))]
        );
        // What another instance reads back, by name.
        let untils: Vec<Option<Instant>> = there
            .rest_names()
            .iter()
            .map(|name| {
                let mut all = here.rests_of(0);
                all.extend(here.rests_of(2));
                all.into_iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, until)| until)
            })
            .collect();
        there.apply_rests(&untils);
        assert_eq!(
            there.acquire(now),
            Err(NoKey::CoolingUntil(now + Duration::from_secs(5)))
        );
        assert_eq!(take(&there, now + Duration::from_secs(5), 2), [0, 1]);
    }

    fn rests(ring: &KeyRing, now: Instant) -> Vec<Rest> {
        ring.snapshot(now).into_iter().map(|key| key.rest).collect()
    }

    #[test]
    fn the_snapshot_says_how_each_key_stands() {
        let ring = ring("aab");
        let now = Instant::now();
        let secs = Duration::from_secs;
        assert_eq!(rests(&ring, now), [Rest::InRotation; 3]);
        ring.cool_account(0, now + secs(5));
        ring.park_key(1, now + secs(300), ParkReason::Rejected);
        ring.park_account(2, now + secs(60), ParkReason::OutOfBalance);
        let parked = |left, reason| Rest::Parked { left, reason };
        assert_eq!(
            rests(&ring, now),
            [
                Rest::Cooling { left: secs(5) },
                // Parking outranks the account's cooldown.
                parked(secs(300), ParkReason::Rejected),
                parked(secs(60), ParkReason::OutOfBalance),
            ]
        );
        assert_eq!(
            rests(&ring, now + secs(5)),
            [
                Rest::InRotation,
                parked(secs(295), ParkReason::Rejected),
                parked(secs(55), ParkReason::OutOfBalance),
            ]
        );
        assert_eq!(rests(&ring, now + secs(300)), [Rest::InRotation; 3]);
        let third = &ring.snapshot(now)[2];
        assert_eq!(
            (
                third.id.as_str(),
                third.masked.as_str(),
                third.account.as_str()
            ),
            ("key#3", "key#3 ••••er-2", "b")
        );
        assert!(!format!("{:?}", ring.snapshot(now)).contains("sk-test"));
    }

    #[test]
    fn a_parking_read_back_keeps_its_reason_and_one_from_elsewhere_says_so() {
        let here = ring("ab");
        let now = Instant::now();
        let until = now + Duration::from_secs(300);
        here.park_key(0, until, ParkReason::Rejected);
        // Its own parking, read back from Redis a few milliseconds off.
        here.apply_rests(&[None, None, Some(until + Duration::from_millis(3)), None]);
        // Another instance parked key#2, which this one never refused.
        here.apply_rests(&[None, None, None, Some(until)]);
        let reasons: Vec<Rest> = rests(&here, now);
        assert!(matches!(
            reasons[..],
            [
                Rest::Parked {
                    reason: ParkReason::Rejected,
                    ..
                },
                Rest::Parked {
                    reason: ParkReason::Elsewhere,
                    ..
                },
            ]
        ));
        // A later parking of key#1 elsewhere, after its own ended.
        let later = now + Duration::from_secs(900);
        here.apply_rests(&[None, None, Some(later), None]);
        assert_eq!(
            rests(&here, now + Duration::from_secs(600))[0],
            Rest::Parked {
                left: Duration::from_secs(300),
                reason: ParkReason::Elsewhere
            }
        );
    }

    #[test]
    fn keys_are_redacted_and_masked() {
        let ring = ring("aa");
        let text = "Incorrect API key provided: sk-test-key-number-1.";
        assert_eq!(ring.redact(text), "Incorrect API key provided: key#2.");
        assert_eq!(mask_all(&keys("aa")), ["key#1 ••••er-0", "key#2 ••••er-1"]);
        let short = ProviderKey {
            secret: SecretString::from("short"),
            account: String::new(),
        };
        assert_eq!(mask_all(&[short]), ["key#1 ••••"]);
        assert!(!format!("{ring:?}").contains("sk-test"));
    }
}
