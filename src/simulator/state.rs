//! The simulator's memory: services and their users (with per-user create attempts), the
//! lock-free counters and the fixed rate-limit window. Knows nothing of HTTP; the one mutex here
//! is never held across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{Datelike, Timelike};
use uuid::Uuid;

use super::{SeedUser, SimStats, SimUser};

/// One registered user as the simulator keeps it.
pub(super) struct StoredUser {
    pub id: Uuid,
    /// A UserID given by a seed file, shown instead of `id` (which stays the internal key), so
    /// that tests can meet any UserID, hostile ones included.
    pub given: Option<Box<str>>,
    pub id_in_service: String,
    pub phone_number: String,
    pub ctime: String,
}

impl StoredUser {
    /// A user created now, with a fresh UserID.
    pub fn new(id_in_service: String, phone_number: String) -> StoredUser {
        StoredUser {
            id: Uuid::new_v4(),
            given: None,
            id_in_service,
            phone_number,
            ctime: ctime_now(),
        }
    }

    /// The UserID as the API shows it.
    pub fn user_id(&self) -> String {
        match &self.given {
            Some(given) => given.to_string(),
            None => self.id.to_string(),
        }
    }

    fn to_sim_user(&self) -> SimUser {
        SimUser {
            id: self.user_id(),
            id_in_service: self.id_in_service.clone(),
            phone_number: self.phone_number.clone(),
            ctime: self.ctime.clone(),
        }
    }
}

/// The current UTC time as the real server most likely wrote it: naive ISO 8601 with
/// microseconds (`%Y-%m-%dT%H:%M:%S%.6f`), formatted by hand because it runs on every create.
pub(super) fn ctime_now() -> String {
    let now = chrono::Utc::now().naive_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        now.year(),
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        (now.nanosecond() / 1_000) % 1_000_000
    )
}

/// What the service knows about one `id_in_service`: where the live user is, if any, and how
/// many create requests named it (kept after a delete, so tests see every attempt).
struct Name {
    slot: Option<usize>,
    attempts: u64,
}

/// Below this many slots, deleted users' tombstones are not worth compacting away.
const MIN_COMPACT_SLOTS: usize = 64;

/// One service's users, in creation order, indexed both ways the API looks them up.
#[derive(Default)]
pub(super) struct Service {
    /// Creation order; `None` is a deleted user (compacted away when they pile up).
    slots: Vec<Option<StoredUser>>,
    by_name: HashMap<String, Name>,
    by_id: HashMap<Uuid, usize>,
    /// Lists streaming now: each goes on from a slot index, so nothing is compacted meanwhile.
    listings: usize,
}

impl Service {
    fn with_seed<'a>(seed: impl Iterator<Item = &'a SeedUser>) -> Service {
        let mut service = Service::default();
        for user in seed {
            // The first seed row for a name wins; later duplicates are ignored.
            let mut stored = StoredUser::new(user.id_in_service.clone(), user.phone_number.clone());
            stored.given = user.user_id.as_deref().map(Box::from);
            let _ = service.insert(stored);
        }
        service
    }

    /// Counts one create request naming `id_in_service`, whatever its answer.
    pub fn note_attempt(&mut self, id_in_service: &str) {
        match self.by_name.get_mut(id_in_service) {
            Some(name) => name.attempts += 1,
            None => {
                self.by_name.insert(
                    id_in_service.to_owned(),
                    Name {
                        slot: None,
                        attempts: 1,
                    },
                );
            }
        }
    }

    pub fn attempts(&self, id_in_service: &str) -> u64 {
        self.by_name
            .get(id_in_service)
            .map_or(0, |name| name.attempts)
    }

    /// Adds the user unless its `id_in_service` is taken; the user comes back on conflict.
    pub fn insert(&mut self, user: StoredUser) -> Result<(), StoredUser> {
        let slot = self.slots.len();
        match self.by_name.get_mut(user.id_in_service.as_str()) {
            Some(Name { slot: Some(_), .. }) => return Err(user),
            Some(name) => name.slot = Some(slot),
            None => {
                self.by_name.insert(
                    user.id_in_service.clone(),
                    Name {
                        slot: Some(slot),
                        attempts: 0,
                    },
                );
            }
        }
        self.by_id.insert(user.id, slot);
        self.slots.push(Some(user));
        Ok(())
    }

    pub fn get(&self, id: &Uuid) -> Option<&StoredUser> {
        let slot = *self.by_id.get(id)?;
        self.slots[slot].as_ref()
    }

    /// The internal key of the user the API calls `user_id`: a generated UUID, or a seed's given id.
    pub fn key_of(&self, user_id: &str) -> Option<Uuid> {
        if let Ok(id) = Uuid::try_parse(user_id)
            && self.by_id.contains_key(&id)
        {
            return Some(id);
        }
        self.users()
            .find(|u| u.given.as_deref() == Some(user_id))
            .map(|u| u.id)
    }

    pub fn find(&self, id_in_service: &str) -> Option<&StoredUser> {
        let slot = self.by_name.get(id_in_service)?.slot?;
        self.slots[slot].as_ref()
    }

    pub fn remove(&mut self, id: &Uuid) -> bool {
        let Some(slot) = self.by_id.remove(id) else {
            return false;
        };
        if let Some(user) = self.slots[slot].take()
            && let Some(name) = self.by_name.get_mut(user.id_in_service.as_str())
        {
            name.slot = None;
        }
        if self.listings == 0
            && self.slots.len() >= MIN_COMPACT_SLOTS
            && self.by_id.len() < self.slots.len() / 2
        {
            self.compact();
        }
        true
    }

    /// Drops tombstones and renumbers the indexes, so delete-heavy runs stay O(live users).
    fn compact(&mut self) {
        self.slots.retain(Option::is_some);
        for (slot, user) in self.slots.iter().enumerate() {
            if let Some(user) = user {
                self.by_id.insert(user.id, slot);
                if let Some(name) = self.by_name.get_mut(user.id_in_service.as_str()) {
                    name.slot = Some(slot);
                }
            }
        }
    }

    /// Live users in creation order.
    pub fn users(&self) -> impl Iterator<Item = &StoredUser> {
        self.slots.iter().flatten()
    }

    /// Live users in creation order from slot `from` on, each with its slot.
    pub fn users_from(&self, from: usize) -> impl Iterator<Item = (usize, &StoredUser)> {
        let slots = self.slots.get(from..).unwrap_or_default();
        slots
            .iter()
            .enumerate()
            .filter_map(move |(i, user)| Some((from + i, user.as_ref()?)))
    }

    /// A list starts streaming: slots keep their places until it ends ([`Service::release_slots`]).
    pub fn hold_slots(&mut self) {
        self.listings += 1;
    }

    /// A list has ended (or its client went away).
    pub fn release_slots(&mut self) {
        self.listings = self.listings.saturating_sub(1);
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// Every service, behind the simulator's one lock.
pub(super) struct Services {
    services: HashMap<String, Service>,
    /// With `service_ids` set, only the services created at start exist.
    restricted: bool,
    /// Seed users without a service, copied into each service when it is first touched.
    shared_seed: Vec<SeedUser>,
}

impl Services {
    /// Materialises the listed services (or those the seed names) with their seed users.
    pub fn new(service_ids: Option<&[String]>, seed: &[SeedUser]) -> Result<Services, String> {
        let shared_seed: Vec<SeedUser> = seed
            .iter()
            .filter(|user| user.service_id.is_none())
            .cloned()
            .collect();
        let mut named: Vec<&str> = Vec::new();
        for user in seed {
            if let Some(service) = user.service_id.as_deref()
                && !named.contains(&service)
            {
                named.push(service);
            }
        }
        let to_create: Vec<&str> = match service_ids {
            Some(listed) => {
                if let Some(stray) = named.iter().find(|s| !listed.iter().any(|l| l == *s)) {
                    return Err(format!(
                        "seed user for service \"{stray}\", which is not in service_ids"
                    ));
                }
                listed.iter().map(String::as_str).collect()
            }
            None => named,
        };
        let services = to_create
            .into_iter()
            .map(|id| {
                let seed = seed
                    .iter()
                    .filter(|user| user.service_id.as_deref().is_none_or(|s| s == id));
                (id.to_owned(), Service::with_seed(seed))
            })
            .collect();
        Ok(Services {
            services,
            restricted: service_ids.is_some(),
            shared_seed,
        })
    }

    /// The service, created on first use unless the set of services is restricted.
    pub fn service(&mut self, id: &str) -> Option<&mut Service> {
        if !self.services.contains_key(id) {
            if self.restricted {
                return None;
            }
            self.create(id);
        }
        self.services.get_mut(id)
    }

    /// The service, created even outside a restricted set (for direct test manipulation).
    pub fn service_forced(&mut self, id: &str) -> &mut Service {
        if !self.services.contains_key(id) {
            self.create(id);
        }
        self.services
            .get_mut(id)
            .expect("service was inserted just above")
    }

    fn create(&mut self, id: &str) {
        let service = Service::with_seed(self.shared_seed.iter());
        self.services.insert(id.to_owned(), service);
    }

    pub fn users(&mut self, id: &str) -> Vec<SimUser> {
        self.service(id)
            .map(|service| service.users().map(StoredUser::to_sim_user).collect())
            .unwrap_or_default()
    }
}

/// The store shared by the handlers and the `Simulator` handle.
pub(super) struct Store(Mutex<Services>);

impl Store {
    pub fn new(services: Services) -> Store {
        Store(Mutex::new(services))
    }

    /// Locks the services; a panic elsewhere cannot leave them half-updated, so poison is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Services> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Atomic counters behind [`SimStats`], so counting never takes the store's lock.
#[derive(Default)]
pub(super) struct Counters {
    pub create_requests: AtomicU64,
    pub created: AtomicU64,
    pub conflicts: AtomicU64,
    pub rejected: AtomicU64,
    pub failures: AtomicU64,
    pub resets: AtomicU64,
    pub throttled: AtomicU64,
    pub unauthorized: AtomicU64,
    pub list_requests: AtomicU64,
    pub get_requests: AtomicU64,
    pub delete_requests: AtomicU64,
    pub deleted: AtomicU64,
}

/// Adds one to a counter; ordering does not matter because counters are only read as a snapshot.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> SimStats {
        let read = |counter: &AtomicU64| counter.load(Relaxed);
        SimStats {
            create_requests: read(&self.create_requests),
            created: read(&self.created),
            conflicts: read(&self.conflicts),
            rejected: read(&self.rejected),
            failures: read(&self.failures),
            resets: read(&self.resets),
            throttled: read(&self.throttled),
            unauthorized: read(&self.unauthorized),
            list_requests: read(&self.list_requests),
            get_requests: read(&self.get_requests),
            delete_requests: read(&self.delete_requests),
            deleted: read(&self.deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> StoredUser {
        StoredUser::new(name.to_owned(), "+3725555555".to_owned())
    }

    #[test]
    fn ctime_is_naive_microseconds() {
        let ctime = ctime_now();
        assert!(
            chrono::NaiveDateTime::parse_from_str(&ctime, "%Y-%m-%dT%H:%M:%S%.6f").is_ok(),
            "{ctime}"
        );
        assert_eq!(ctime.len(), 26, "{ctime}");
    }

    #[test]
    fn insert_conflicts_on_same_name_and_keeps_order() {
        let mut service = Service::default();
        assert!(service.insert(user("a")).is_ok());
        assert!(service.insert(user("b")).is_ok());
        assert!(service.insert(user("a")).is_err());
        let names: Vec<_> = service.users().map(|u| u.id_in_service.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn remove_frees_the_name_and_keeps_attempts() {
        let mut service = Service::default();
        service.note_attempt("a");
        assert!(service.insert(user("a")).is_ok());
        let id = service.find("a").expect("just inserted").id;
        assert!(service.remove(&id));
        assert!(!service.remove(&id));
        assert!(service.get(&id).is_none());
        assert!(service.insert(user("a")).is_ok());
        assert_eq!(service.attempts("a"), 1);
    }

    #[test]
    fn compaction_keeps_lookups_right() {
        let mut service = Service::default();
        for i in 0..200 {
            assert!(service.insert(user(&i.to_string())).is_ok());
        }
        for i in (0..200).filter(|i| i % 4 != 0) {
            let id = service.find(&i.to_string()).expect("present").id;
            assert!(service.remove(&id));
        }
        assert_eq!(service.len(), 50);
        assert!(service.slots.len() < 200, "tombstones were compacted");
        for i in (0..200).step_by(4) {
            let found = service.find(&i.to_string()).expect("kept");
            assert_eq!(service.get(&found.id).map(|u| u.id), Some(found.id));
        }
        let order: Vec<_> = service.users().map(|u| u.id_in_service.clone()).collect();
        let expected: Vec<_> = (0..200).step_by(4).map(|i| i.to_string()).collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn restricted_services_reject_stray_seed() {
        let seed = [SeedUser {
            service_id: Some("other".into()),
            id_in_service: "a".into(),
            phone_number: "+1".into(),
            user_id: None,
        }];
        let listed = ["svc".to_owned()];
        assert!(Services::new(Some(&listed), &seed).is_err());
    }

    #[test]
    fn shared_seed_reaches_lazy_services() {
        let seed = [
            SeedUser {
                service_id: None,
                id_in_service: "everywhere".into(),
                phone_number: "+1".into(),
                user_id: None,
            },
            SeedUser {
                service_id: Some("one".into()),
                id_in_service: "only-one".into(),
                phone_number: "+2".into(),
                user_id: None,
            },
        ];
        let mut services = Services::new(None, &seed).expect("valid seed");
        let names = |users: Vec<SimUser>| -> Vec<String> {
            users.into_iter().map(|u| u.id_in_service).collect()
        };
        assert_eq!(names(services.users("one")), ["everywhere", "only-one"]);
        assert_eq!(names(services.users("two")), ["everywhere"]);
    }
}
