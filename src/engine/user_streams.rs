//! Which users on which cores follow `GET /frontend/v1/stream` (every
//! change of every thread they own or take part in), as one shard sees it.
//!
//! A user's entry is made when their first stream subscribes here: their
//! threads on this shard are read once (author and member indexes) and
//! kept current by every join and leave afterwards. A change of a thread
//! then reaches the cores of the users watching it, in O(watchers).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// One user's streams and threads on this shard.
struct Follower {
    /// Core -> streams of this user on that core.
    cores: HashMap<usize, usize>,
    threads: HashSet<String>,
}

#[derive(Default)]
pub struct UserStreams {
    followers: RefCell<HashMap<String, Follower>>,
    /// Thread -> users with streams who see it.
    watchers: RefCell<HashMap<String, HashSet<String>>>,
}

impl UserStreams {
    /// Counts a stream of `user` on `core`; `threads` lists the user's
    /// threads on this shard, read only for the user's first stream.
    pub fn subscribe<E>(
        &self,
        user: &str,
        core: usize,
        threads: impl FnOnce() -> Result<Vec<String>, E>,
    ) -> Result<(), E> {
        if !self.followers.borrow().contains_key(user) {
            let threads: HashSet<String> = threads()?.into_iter().collect();
            let mut watchers = self.watchers.borrow_mut();
            for thread in &threads {
                watchers
                    .entry(thread.clone())
                    .or_default()
                    .insert(user.to_owned());
            }
            let follower = Follower {
                cores: HashMap::new(),
                threads,
            };
            self.followers
                .borrow_mut()
                .insert(user.to_owned(), follower);
        }
        let mut followers = self.followers.borrow_mut();
        let follower = followers.get_mut(user).expect("inserted above");
        *follower.cores.entry(core).or_insert(0) += 1;
        Ok(())
    }

    /// Undoes one `subscribe`; the user's last stream forgets them here.
    pub fn unsubscribe(&self, user: &str, core: usize) {
        let mut followers = self.followers.borrow_mut();
        let Some(follower) = followers.get_mut(user) else {
            return;
        };
        if let Some(count) = follower.cores.get_mut(&core) {
            *count -= 1;
            if *count == 0 {
                follower.cores.remove(&core);
            }
        }
        if !follower.cores.is_empty() {
            return;
        }
        let follower = followers.remove(user).expect("present");
        let mut watchers = self.watchers.borrow_mut();
        for thread in follower.threads {
            if let Some(users) = watchers.get_mut(&thread) {
                users.remove(user);
                if users.is_empty() {
                    watchers.remove(&thread);
                }
            }
        }
    }

    /// `user` now sees `thread` (a no-op without a stream of theirs).
    pub fn joined(&self, user: &str, thread: &str) {
        if let Some(follower) = self.followers.borrow_mut().get_mut(user)
            && follower.threads.insert(thread.to_owned())
        {
            self.watchers
                .borrow_mut()
                .entry(thread.to_owned())
                .or_default()
                .insert(user.to_owned());
        }
    }

    pub fn left(&self, user: &str, thread: &str) {
        if let Some(follower) = self.followers.borrow_mut().get_mut(user) {
            follower.threads.remove(thread);
            let mut watchers = self.watchers.borrow_mut();
            if let Some(users) = watchers.get_mut(thread) {
                users.remove(user);
                if users.is_empty() {
                    watchers.remove(thread);
                }
            }
        }
    }

    /// Whether any user's stream watches `thread`.
    pub fn watched(&self, thread: &str) -> bool {
        self.watchers
            .borrow()
            .get(thread)
            .is_some_and(|users| !users.is_empty())
    }

    /// The stream topic of each user watching `thread` (and of `also`, a
    /// user who just left it), with the cores their streams are on.
    pub fn audience(&self, thread: &str, also: Option<&str>) -> Vec<(String, Vec<usize>)> {
        let watchers = self.watchers.borrow();
        let followers = self.followers.borrow();
        let watching = watchers.get(thread);
        let also = also.filter(|user| watching.is_none_or(|users| !users.contains(*user)));
        let users = watching.into_iter().flatten().map(String::as_str);
        users
            .chain(also)
            .filter_map(|user| {
                let follower = followers.get(user)?;
                Some((topic(user), follower.cores.keys().copied().collect()))
            })
            .collect()
    }
}

/// A user's stream topic on a core's hub. `@` never appears in a thread
/// id, so user topics and thread topics cannot collide.
pub fn topic(user: &str) -> String {
    format!("@{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(ids: &[&str]) -> Result<Vec<String>, ()> {
        Ok(ids.iter().map(|id| id.to_string()).collect())
    }

    #[test]
    fn watchers_follow_subscriptions_joins_and_leaves() {
        let streams = UserStreams::default();
        streams.subscribe("bob", 1, || threads(&["t1"])).unwrap();
        streams
            .subscribe("bob", 0, || threads(&["unread"]))
            .unwrap();
        assert_eq!(streams.audience("t1", None).len(), 1);
        streams.joined("bob", "t2");
        streams.joined("carol", "t2");
        let mut cores = streams.audience("t2", None)[0].1.clone();
        cores.sort();
        assert_eq!(cores, [0, 1]);
        streams.left("bob", "t2");
        assert!(streams.audience("t2", None).is_empty());
        assert_eq!(streams.audience("t2", Some("bob"))[0].0, "@bob");
        // A user who still watches is not named twice.
        assert_eq!(streams.audience("t1", Some("bob")).len(), 1);
        streams.unsubscribe("bob", 0);
        streams.unsubscribe("bob", 1);
        assert!(streams.audience("t1", None).is_empty());
        assert!(streams.watchers.borrow().is_empty());
    }
}
