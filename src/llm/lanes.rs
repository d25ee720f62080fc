//! Connections to one provider, in lanes of at most [`STREAMS_PER_LANE`] open answers
//! (`{ID}_STREAMS_PER_CONNECTION` for a server that allows fewer).
//!
//! Over HTTP/2 (what a provider negotiates over TLS, or `{ID}_HTTP2=1` over plain http)
//! one client carries every answer on one connection, and the server caps the streams of
//! a connection (`SETTINGS_MAX_CONCURRENT_STREAMS`: nginx 128, hyper 200, Cloudflare
//! 256; RFC 9113 asks for no fewer than 100). At the cap hyper opens no second connection:
//! the next request waits until a stream ends — and an answer's stream lasts minutes. So
//! each lane is a client of its own (its own connection), a lane takes at most 100 open
//! answers, and the next lane opens when every lane is full. Over HTTP/1 a lane is a
//! pool of up to 100 connections (one answer each); the lanes only divide the pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The most answers one lane carries at once, unless the provider's settings say fewer:
/// the floor RFC 9113 asks servers to allow (a SHOULD, not a MUST).
pub(crate) const STREAMS_PER_LANE: usize = 100;

/// How a lane's client talks to the provider.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LaneSettings {
    pub connect_timeout: Duration,
    /// HTTP/2 without TLS, by prior knowledge (h2c). Over https ALPN decides.
    pub h2c: bool,
    /// The most answers one lane carries (at least 1).
    pub streams: usize,
}

impl LaneSettings {
    fn client(self) -> reqwest::Result<reqwest::Client> {
        let builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90));
        let builder = if self.h2c {
            builder.http2_prior_knowledge()
        } else {
            builder
        };
        builder.build()
    }
}

struct Lane {
    client: reqwest::Client,
    open: Arc<AtomicUsize>,
}

impl Lane {
    fn new(settings: LaneSettings) -> reqwest::Result<Lane> {
        Ok(Lane {
            client: settings.client()?,
            open: Arc::default(),
        })
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One provider's lanes.
pub(crate) struct Lanes {
    settings: LaneSettings,
    lanes: Mutex<Vec<Lane>>,
}

/// An answer's place in a lane, given back when dropped (with the response body).
#[derive(Debug)]
pub(crate) struct Lease {
    open: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// The first lane is built at once, so a client that cannot be built fails start-up.
    pub(crate) fn new(settings: LaneSettings) -> reqwest::Result<Lanes> {
        Ok(Lanes {
            settings,
            lanes: Mutex::new(vec![Lane::new(settings)?]),
        })
    }

    /// A client with room for one more answer, and the lease that holds its place: the
    /// first lane with room, or a new one. Then the empty lanes at the end of the list
    /// are closed but one (so a load at a lane's edge does not open and close lanes); an
    /// idle provider's lanes stay, their connections closing after 90 s idle.
    pub(crate) fn lease(&self) -> reqwest::Result<(reqwest::Client, Lease)> {
        // A new lane's client (TLS settings, proxies) is built outside the lock; when
        // another answer added a lane meanwhile, it is dropped unused.
        let mut built = None;
        loop {
            // Places are taken only under the lock, so a lane counted empty here stays so.
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            let index = match lanes.iter().position(|l| l.open() < self.settings.streams) {
                Some(index) => index,
                None => match built.take() {
                    Some(lane) => {
                        lanes.push(lane);
                        lanes.len() - 1
                    }
                    None => {
                        drop(lanes);
                        built = Some(Lane::new(self.settings)?);
                        continue;
                    }
                },
            };
            while lanes.len() > index + 2 && lanes.last().is_some_and(|l| l.open() == 0) {
                lanes.pop();
            }
            let lane = &lanes[index];
            lane.open.fetch_add(1, Ordering::Relaxed);
            let lease = Lease {
                open: lane.open.clone(),
            };
            return Ok((lane.client.clone(), lease));
        }
    }

    /// Open answers per lane, first lane first.
    #[cfg(test)]
    fn load(&self) -> Vec<usize> {
        let lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        lanes.iter().map(Lane::open).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes() -> Lanes {
        Lanes::new(LaneSettings {
            connect_timeout: Duration::from_secs(1),
            h2c: true,
            streams: STREAMS_PER_LANE,
        })
        .unwrap()
    }

    #[test]
    fn a_lane_fills_before_the_next_opens() {
        let lanes = lanes();
        let leases: Vec<_> = (0..STREAMS_PER_LANE + 1)
            .map(|_| lanes.lease().unwrap().1)
            .collect();
        assert_eq!(lanes.load(), vec![STREAMS_PER_LANE, 1]);
        drop(leases);
        assert_eq!(lanes.load(), vec![0, 0]);
    }

    #[test]
    fn a_freed_place_in_an_earlier_lane_is_taken_first() {
        let lanes = lanes();
        let mut leases: Vec<_> = (0..2 * STREAMS_PER_LANE)
            .map(|_| lanes.lease().unwrap().1)
            .collect();
        leases.swap_remove(3);
        let _again = lanes.lease().unwrap();
        assert_eq!(lanes.load(), vec![STREAMS_PER_LANE, STREAMS_PER_LANE]);
    }

    #[test]
    fn empty_lanes_close_but_one_spare() {
        let lanes = lanes();
        let leases: Vec<_> = (0..3 * STREAMS_PER_LANE)
            .map(|_| lanes.lease().unwrap().1)
            .collect();
        assert_eq!(lanes.load().len(), 3);
        drop(leases);
        let _one = lanes.lease().unwrap();
        assert_eq!(lanes.load(), vec![1, 0]);
    }
}
