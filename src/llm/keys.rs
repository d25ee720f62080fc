//! The key ring: several API keys of one provider, used round-robin. A key that got a 429
//! cools down until its `Retry-After`; a key refused (401/403) or out of quota is parked.
//! Keys never leave this module except into the `Authorization` header; everything
//! else names a key by its id, `key#1`, `key#2`, ….

use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

/// Why no key can be used right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoKey {
    /// Some key is only cooling down after a 429; the first is free again at this instant.
    CoolingUntil(Instant),
    /// Every key was refused or is out of quota.
    AllParked,
}

/// Why a key rests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rest {
    /// Rate limited: it will be usable again soon.
    Cooling,
    /// Refused (401/403) or out of quota: left alone for a long while.
    Parked,
}

#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<SecretString>,
    state: Mutex<RingState>,
}

#[derive(Debug)]
struct RingState {
    next: usize,
    /// Per key: not to be used before this instant, and why.
    resting_until: Vec<Option<(Instant, Rest)>>,
}

/// Masked forms for the settings page: `key#1 ••••3f9a` (last four of long keys only).
pub fn mask_all(keys: &[SecretString]) -> Vec<String> {
    let mask = |(index, key): (usize, &SecretString)| {
        let chars: Vec<char> = key.expose_secret().chars().collect();
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

impl KeyRing {
    pub fn new(keys: Vec<SecretString>) -> Self {
        let state = RingState {
            next: 0,
            resting_until: vec![None; keys.len()],
        };
        KeyRing {
            keys,
            state: Mutex::new(state),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The next usable key in round-robin order, skipping resting keys.
    pub fn acquire(&self, now: Instant) -> Result<usize, NoKey> {
        let mut state = self.lock();
        let count = self.keys.len();
        for offset in 0..count {
            let index = (state.next + offset) % count;
            if state.resting_until[index].is_none_or(|(until, _)| until <= now) {
                state.resting_until[index] = None;
                state.next = (index + 1) % count;
                return Ok(index);
            }
        }
        let cooling = state
            .resting_until
            .iter()
            .flatten()
            .filter(|(_, why)| *why == Rest::Cooling);
        match cooling.map(|(until, _)| *until).min() {
            Some(soonest) => Err(NoKey::CoolingUntil(soonest)),
            None => Err(NoKey::AllParked),
        }
    }

    /// True when some key could be used at `now` (nothing is taken).
    pub fn has_ready(&self, now: Instant) -> bool {
        let state = self.lock();
        state
            .resting_until
            .iter()
            .any(|rest| rest.is_none_or(|(t, _)| t <= now))
    }

    /// Rests key `index` until `until` (a 429's Retry-After, or a refusal's parking time).
    /// A shorter rest never shortens a longer one.
    pub fn rest(&self, index: usize, until: Instant, why: Rest) {
        let mut state = self.lock();
        let slot = &mut state.resting_until[index];
        *slot = match *slot {
            Some((current, current_why)) if current >= until => Some((current, current_why)),
            _ => Some((until, why)),
        };
    }

    /// The secret itself, for the `Authorization` header only.
    pub(crate) fn secret(&self, index: usize) -> &str {
        self.keys[index].expose_secret()
    }

    /// Replaces any key that appears in `text` (an upstream error message may echo it).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (index, key) in self.keys.iter().enumerate() {
            let key = key.expose_secret();
            if key.len() >= 4 && out.contains(key) {
                out = out.replace(key, &key_id(index));
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RingState> {
        // A panic while holding this lock cannot leave the state inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn keys(n: usize) -> Vec<SecretString> {
        (0..n)
            .map(|i| SecretString::from(format!("sk-test-key-number-{i}")))
            .collect()
    }

    fn ring(n: usize) -> KeyRing {
        KeyRing::new(keys(n))
    }

    #[test]
    fn round_robin_order() {
        let ring = ring(3);
        let now = Instant::now();
        let order: Vec<usize> = (0..7).map(|_| ring.acquire(now).unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn resting_keys_are_skipped_until_they_wake() {
        let ring = ring(3);
        let now = Instant::now();
        ring.rest(1, now + Duration::from_secs(5), Rest::Cooling);
        let order: Vec<usize> = (0..4).map(|_| ring.acquire(now).unwrap()).collect();
        assert_eq!(order, [0, 2, 0, 2]);
        let later = now + Duration::from_secs(5);
        let order: Vec<usize> = (0..3).map(|_| ring.acquire(later).unwrap()).collect();
        assert_eq!(order, [0, 1, 2]);
    }

    #[test]
    fn all_resting_reports_the_soonest() {
        let ring = ring(2);
        let now = Instant::now();
        ring.rest(0, now + Duration::from_secs(9), Rest::Cooling);
        ring.rest(1, now + Duration::from_secs(4), Rest::Cooling);
        assert!(!ring.has_ready(now));
        assert_eq!(
            ring.acquire(now),
            Err(NoKey::CoolingUntil(now + Duration::from_secs(4)))
        );
        // A shorter rest never shortens a longer one.
        ring.rest(0, now + Duration::from_secs(1), Rest::Cooling);
        assert_eq!(ring.acquire(now + Duration::from_secs(4)), Ok(1));
    }

    #[test]
    fn parked_keys_are_not_waited_for() {
        let ring = ring(2);
        let now = Instant::now();
        ring.rest(0, now + Duration::from_secs(300), Rest::Parked);
        ring.rest(1, now + Duration::from_secs(300), Rest::Parked);
        assert_eq!(ring.acquire(now), Err(NoKey::AllParked));
        ring.rest(1, now + Duration::from_secs(400), Rest::Cooling);
        assert_eq!(
            ring.acquire(now),
            Err(NoKey::CoolingUntil(now + Duration::from_secs(400)))
        );
    }

    #[test]
    fn keys_are_redacted_and_masked() {
        let ring = ring(2);
        let text = "Incorrect API key provided: sk-test-key-number-1.";
        assert_eq!(ring.redact(text), "Incorrect API key provided: key#2.");
        assert_eq!(mask_all(&keys(2)), ["key#1 ••••er-0", "key#2 ••••er-1"]);
        assert_eq!(mask_all(&[SecretString::from("short")]), ["key#1 ••••"]);
        assert!(!format!("{ring:?}").contains("sk-test"));
    }
}
