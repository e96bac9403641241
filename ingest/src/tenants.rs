//! Which tenant a vehicle belongs to, remembered between messages.
//!
//! The intake must look a vehicle up when it knows nothing usable: a vehicle seen for the first
//! time, or one whose last answer was "unknown" and has aged (that vehicle's messages wait for
//! the answer; the intake goes on with the others). A known vehicle whose entry has aged keeps
//! its tenant while one refresh runs beside the loop (a vehicle belongs to one tenant; moving it
//! is rare, and shows within one refresh). Before this, every vehicle's entry expiring in the
//! same 30 s turned into a burst of lookups one after another inside the loop: with 100 vehicles
//! on Cassandra, the stalls behind them made up most of ingest's p99 latency.
//!
//! A map of its own rather than a cache crate: serving an aged answer while it is refreshed
//! needs the entry's age and its refresh state, which a TTL cache hides by evicting it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tripline_model::{TenantId, VehicleId};

/// How long an answer is used before it is asked again (a registration shows within this long;
/// a known vehicle's refresh does not hold up its messages).
pub const TENANT_TTL: Duration = Duration::from_secs(30);

/// Entries kept before the aged and the unknown ones are dropped (about 100 bytes each). A flood
/// of made-up vehicle ids cannot grow the map past twice the vehicles known and fresh, or this.
pub const MAX_ENTRIES: usize = 1_000_000;

/// What the intake does for a vehicle's message.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Use this answer (`None`: not registered).
    Use(Option<TenantId>),
    /// Use this tenant, and refresh the entry beside the loop ([`Tenants::refreshed`] after).
    UseAndRefresh(TenantId),
    /// Nothing usable is known: look it up now, then [`Tenants::refreshed`].
    Fetch,
}

#[derive(Debug)]
struct Entry {
    tenant: Option<TenantId>,
    fetched: Instant,
    refreshing: bool,
}

/// The remembered answers of the registry.
#[derive(Debug)]
pub struct Tenants {
    entries: HashMap<VehicleId, Entry>,
    /// At this many entries, the aged and the unknown ones go.
    prune_at: usize,
}

impl Default for Tenants {
    fn default() -> Self {
        Tenants::with_limit(MAX_ENTRIES)
    }
}

impl Tenants {
    /// Remembers up to about `limit` answers (see [`MAX_ENTRIES`]).
    pub fn with_limit(limit: usize) -> Self {
        Tenants { entries: HashMap::new(), prune_at: limit.max(1) }
    }

    /// Answers remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What to do for a message of `vehicle` at `now`.
    pub fn lookup(&mut self, vehicle: &VehicleId, now: Instant) -> Lookup {
        let Some(entry) = self.entries.get_mut(vehicle) else { return Lookup::Fetch };
        if now.saturating_duration_since(entry.fetched) < TENANT_TTL {
            return Lookup::Use(entry.tenant.clone());
        }
        match &entry.tenant {
            // "Not registered" must not outlive its time: a registration since then would be
            // refused for longer than promised.
            None => Lookup::Fetch,
            Some(_) if entry.refreshing => Lookup::Use(entry.tenant.clone()),
            Some(tenant) => {
                entry.refreshing = true;
                Lookup::UseAndRefresh(tenant.clone())
            }
        }
    }

    /// Records the registry's answer for `vehicle`, fetched at `at`.
    pub fn refreshed(&mut self, vehicle: VehicleId, tenant: Option<TenantId>, at: Instant) {
        if self.entries.len() >= self.prune_at && !self.entries.contains_key(&vehicle) {
            self.prune(at);
        }
        self.entries.insert(vehicle, Entry { tenant, fetched: at, refreshing: false });
    }

    /// Drops the aged answers and the "unknown" ones (a dropped vehicle is looked up again on
    /// its next message). The next pruning waits until the map has doubled, so pruning costs
    /// O(1) per answer however many fresh known vehicles stay.
    fn prune(&mut self, now: Instant) {
        let limit = self.prune_at;
        self.entries.retain(|_, entry| {
            entry.refreshing || (entry.tenant.is_some() && now.saturating_duration_since(entry.fetched) < TENANT_TTL)
        });
        self.prune_at = limit.max(self.entries.len() * 2);
    }

    /// A refresh failed: the old answer stays, and the next message asks again.
    pub fn refresh_failed(&mut self, vehicle: &VehicleId) {
        if let Some(entry) = self.entries.get_mut(vehicle) {
            entry.refreshing = false;
        }
    }

    /// The tenant remembered for `vehicle` (whatever its age).
    pub fn tenant(&self, vehicle: &VehicleId) -> Option<TenantId> {
        self.entries.get(vehicle).and_then(|e| e.tenant.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn v(name: &str) -> VehicleId {
        VehicleId::parse(name).unwrap()
    }

    fn t(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    #[test]
    fn a_vehicle_seen_first_is_looked_up_then_remembered() {
        let now = Instant::now();
        let mut tenants = Tenants::default();
        assert_eq!(tenants.lookup(&v("car"), now), Lookup::Fetch);
        tenants.refreshed(v("car"), Some(t("acme")), now);
        assert_eq!(tenants.lookup(&v("car"), now + Duration::from_secs(1)), Lookup::Use(Some(t("acme"))));
        assert_eq!(tenants.tenant(&v("car")), Some(t("acme")));
    }

    #[test]
    fn an_aged_known_vehicle_keeps_its_tenant_while_one_refresh_runs() {
        let now = Instant::now();
        let later = now + TENANT_TTL + Duration::from_secs(1);
        let mut tenants = Tenants::default();
        tenants.refreshed(v("car"), Some(t("acme")), now);
        assert_eq!(tenants.lookup(&v("car"), later), Lookup::UseAndRefresh(t("acme")));
        assert_eq!(tenants.lookup(&v("car"), later), Lookup::Use(Some(t("acme"))), "one refresh at a time");
        tenants.refreshed(v("car"), Some(t("globex")), later);
        assert_eq!(tenants.lookup(&v("car"), later), Lookup::Use(Some(t("globex"))), "a move shows after it");
    }

    #[test]
    fn a_failed_refresh_is_tried_again_by_the_next_message() {
        let now = Instant::now();
        let later = now + TENANT_TTL;
        let mut tenants = Tenants::default();
        tenants.refreshed(v("car"), Some(t("acme")), now);
        assert_eq!(tenants.lookup(&v("car"), later), Lookup::UseAndRefresh(t("acme")));
        tenants.refresh_failed(&v("car"));
        assert_eq!(tenants.lookup(&v("car"), later), Lookup::UseAndRefresh(t("acme")));
    }

    #[test]
    fn made_up_vehicles_cannot_grow_the_map_past_its_limit_and_known_ones_stay() {
        let now = Instant::now();
        let mut tenants = Tenants::with_limit(100);
        for k in 0..10 {
            tenants.refreshed(v(&format!("car-{k}")), Some(t("acme")), now);
        }
        for k in 0..10_000 {
            tenants.refreshed(v(&format!("made-up-{k}")), None, now);
            assert!(tenants.len() <= 100, "{} entries", tenants.len());
        }
        for k in 0..10 {
            assert_eq!(tenants.lookup(&v(&format!("car-{k}")), now), Lookup::Use(Some(t("acme"))));
        }
        // A dropped unknown vehicle is simply looked up again.
        assert_eq!(tenants.lookup(&v("made-up-0"), now), Lookup::Fetch);
    }

    #[test]
    fn many_fresh_known_vehicles_raise_the_limit_instead_of_pruning_every_answer() {
        let now = Instant::now();
        let mut tenants = Tenants::with_limit(10);
        for k in 0..1_000 {
            tenants.refreshed(v(&format!("car-{k}")), Some(t("acme")), now);
        }
        assert_eq!(tenants.len(), 1_000, "fresh known vehicles are never dropped");
        let later = now + TENANT_TTL;
        for k in 0..2_000 {
            tenants.refreshed(v(&format!("new-{k}")), Some(t("acme")), later);
        }
        assert!(tenants.len() <= 2_000, "the aged ones went: {}", tenants.len());
    }

    #[test]
    fn an_aged_unknown_vehicle_is_looked_up_again_before_its_message_is_judged() {
        let now = Instant::now();
        let mut tenants = Tenants::default();
        tenants.refreshed(v("stranger"), None, now);
        assert_eq!(tenants.lookup(&v("stranger"), now + Duration::from_secs(5)), Lookup::Use(None));
        assert_eq!(tenants.lookup(&v("stranger"), now + TENANT_TTL), Lookup::Fetch);
    }
}
